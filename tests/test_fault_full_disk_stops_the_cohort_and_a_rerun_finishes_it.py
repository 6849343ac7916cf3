"""Tiling onto a disk that fills up: the slide in hand fails plainly, no other is started,
nothing half-written is marked done, and a rerun once there is room finishes every slide.

The disk is a real tmpfs mounted inside the test (needs root, as in CI); without the
right to mount, the same path is covered by the runner test's simulated ENOSPC.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slideflow_core.store import part_state
from tiling import TilingConfig, open_store, tile_cohort

pytestmark = pytest.mark.fault

CONFIG = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=64, codec="zstd")


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}); see the runner test")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_one_slide_stops_the_rest_and_a_rerun_completes(
    small_disk, cmu_svs, tmp_path
):
    ids = [f"cmu-{i}" for i in range(4)]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"slide_id": ids, "path": [str(cmu_svs)] * 4}).to_csv(manifest, index=False)
    project = small_disk / "project"

    report = tile_cohort(manifest, project, CONFIG, executor="local", progress=False)

    statuses = {r.slide_id: r.status for r in report.results}
    full = [r for r in report.results if r.disk_full]
    assert len(full) == 1, statuses
    assert full[0].error.startswith("the disk is full") and "larger disk" in full[0].hint
    after = ids[ids.index(full[0].slide_id) + 1 :]
    assert all(statuses[s] == "blocked" for s in after)
    for slide_id in ids:  # nothing half-written counts as done
        state = part_state(project / "stores" / f"{slide_id}.zarr", "tiling", CONFIG.identity())
        assert (state == "complete") == (statuses[slide_id] == "done"), slide_id

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = tile_cohort(manifest, project, CONFIG, executor="local", progress=False)

    assert again.ok, str(again)
    assert {r.slide_id for r in again.results if r.status == "done"} == {
        s for s, status in statuses.items() if status != "done"
    }
    assert not list((project / "stores").glob("*.partial"))
    reference = open_store(project / "stores" / "cmu-0.zarr")
    for slide_id in ids[1:]:
        store = open_store(project / "stores" / f"{slide_id}.zarr")
        np.testing.assert_array_equal(store.coords, reference.coords)
        np.testing.assert_array_equal(store.read_tiles(np.arange(len(store))),
                                      reference.read_tiles(np.arange(len(reference))))  # fmt: skip
    assert Path(project / "status" / "tile.csv").is_file()
