"""Kill the embedder actor mid-slide: Ray restarts it, the slide is redone, no row is doubled."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from embedding_project import tile_project

import embedders
from embedders import embed_cohort
from slideflow_core.features import read_features
from tiling import open_store

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _kill_embedding_actor(kills: list[int], stop: threading.Event) -> None:
    """SIGKILL the actor process once, while it is inside ``embed``, after it has written rows."""
    while not stop.is_set() and not kills:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if "ray::StageWorker.process" in title:
                time.sleep(0.5)  # let it get into the slide
                try:
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    kills.append(proc.info["pid"])
                except ProcessLookupError:
                    pass
                break
        time.sleep(0.05)


def test_a_killed_actor_is_restarted_and_every_slide_ends_complete(ray_session, cmu_svs, tmp_path):
    rows = [{"slide_id": f"cmu-{i}", "path": str(cmu_svs)} for i in range(3)]
    project = tile_project(tmp_path / "project", rows)
    kills: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_embedding_actor, args=(kills, stop), daemon=True)
    killer.start()
    try:
        report = embed_cohort(project, "handcrafted", batch_size=4, progress=False)
    finally:
        stop.set()
        killer.join()
    assert kills, "no actor was killed: the test did not exercise a failure"
    assert report.ok, str(report)
    reference = embedders.create("handcrafted", device="cpu")
    store = open_store(project / "stores" / "cmu-0.zarr")
    expected = reference.embed(store.read_tiles(np.flatnonzero(store.qc()["keep"].to_numpy())))
    for row in rows:
        bag = read_features(project / "stores" / f"{row['slide_id']}.zarr", "handcrafted")
        assert len(np.unique(bag.tile_index)) == len(bag) == len(expected)  # no duplicate rows
        np.testing.assert_allclose(bag.features, expected, rtol=1e-3, atol=1e-3)
