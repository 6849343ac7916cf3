"""Kill Ray workers in the middle of a cohort: no tile is missing or duplicated after a rerun."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from tiling import TilingConfig, open_store, tile_cohort

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _kill_workers_running(names: tuple[str, ...], kills: list[int], stop: threading.Event) -> None:
    """Kill (SIGKILL) up to two Ray workers while they run one of our tasks."""
    while not stop.is_set() and len(kills) < 2:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(proc.info["cmdline"] or [])
            if any(f"ray::{name}" in title for name in names):
                try:
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    kills.append(proc.info["pid"])
                    time.sleep(0.5)
                except ProcessLookupError:
                    pass
                break
        time.sleep(0.02)


def test_killed_workers_leave_no_missing_or_duplicate_tiles(ray_session, cmu_svs, tmp_path):
    manifest = tmp_path / "manifest.csv"
    rows = [{"slide_id": f"cmu-{i}", "path": str(cmu_svs)} for i in range(4)]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = TilingConfig(mpp=0.499, tile_px=64, shard_tiles=64, band_tiles=256)
    kills: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_workers_running, args=(("_unit_task", "_plan_task"), kills, stop), daemon=True
    )
    killer.start()
    try:
        tile_cohort(manifest, tmp_path / "out", config, progress=False)
    finally:
        stop.set()
        killer.join()
    assert kills, "no worker was killed: the test did not exercise a failure"

    rerun = tile_cohort(manifest, tmp_path / "out", config, progress=False)
    assert rerun.ok, str(rerun)
    reference = None
    for i in range(4):
        tiles = open_store(tmp_path / "out" / "stores" / f"cmu-{i}.zarr")
        coords = tiles.coords
        assert len({tuple(c) for c in coords.tolist()}) == len(coords)  # no duplicates
        qc = tiles.qc()
        assert not qc["blur"].isna().any()  # no tile left unwritten
        pixels = tiles.dask().compute()
        if reference is None:
            reference = (coords, pixels)
        np.testing.assert_array_equal(coords, reference[0])
        np.testing.assert_array_equal(pixels, reference[1])
