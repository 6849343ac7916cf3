"""The driver (``sfc run``) is killed mid-run; rerunning finishes the rest and redoes nothing.

The first run is a real ``sfc run`` process (with its own local Ray), killed
with its whole process group as soon as its first slide is done. The rerun
must leave every store finished before the kill untouched (same root metadata
file, same commit time) and finish the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cluster_fixtures import TILING, assert_complete_once, write_manifest

import cluster
from slideflow_core.store import part_state, read_store_attrs

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _kill_session(session: int) -> None:
    """SIGKILL every process of a session: the driver, its local Ray and its workers.

    Ray workers run in process groups of their own, so killing the driver's group
    alone would leave a worker to finish the slide in hand after the "crash".
    """
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(pid) == session:
                os.kill(pid, signal.SIGKILL)


def _done(status: Path) -> list[str]:
    if not status.is_dir():
        return []
    return sorted(
        p.stem for p in status.glob("*.json") if json.loads(p.read_text())["status"] == "done"
    )


def test_rerun_after_a_killed_driver_skips_finished_slides(synthetic_slide, tmp_path):
    slide, _ = synthetic_slide
    manifest = tmp_path / "manifest.csv"
    ids = write_manifest(manifest, str(slide), 6)
    run_dir = tmp_path / "run"
    config = cluster.PipelineConfig(run_dir=str(run_dir), settings={"tile": TILING})
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(config.to_yaml())

    sfc = Path(sys.executable).with_name("sfc")
    command = [str(sfc), "run", str(manifest), "--config", str(config_path)]
    driver = subprocess.Popen(
        [*command, "--num-cpus", "1", "--no-progress"],
        start_new_session=True,  # its own process group: the driver and its local Ray
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not _done(run_dir / "status" / "tile") and time.monotonic() < deadline:
            assert driver.poll() is None, "sfc run ended before any slide was done"
            time.sleep(0.05)
    finally:
        _kill_session(driver.pid)
        driver.wait()
    finished = _done(run_dir / "status" / "tile")
    assert finished, "no slide finished before the deadline"
    # A slide may be committed by its worker before the driver hears of it: it
    # counts as finished too (its store is complete), and must not be redone.
    stores = run_dir / "stores"
    complete = [s for s in ids if part_state(stores / f"{s}.zarr", "tiling", TILING.identity())
                == "complete"]  # fmt: skip
    assert set(finished) <= set(complete)
    assert len(complete) < len(ids), "every slide finished before the kill"
    before = {
        sid: (
            (stores / f"{sid}.zarr" / "zarr.json").stat().st_mtime_ns,
            read_store_attrs(stores / f"{sid}.zarr")["parts"]["tiling"]["time"],
        )
        for sid in complete
    }

    report = cluster.run(manifest, config_path, num_cpus=2, progress=False)

    assert report.ok, str(report)
    states = {o.slide_id: o.status for o in report.states.outcomes("tile")}
    assert {sid for sid, s in states.items() if s == "skipped"} == set(complete)
    assert {sid for sid, s in states.items() if s == "done"} == set(ids) - set(complete)
    for sid, (mtime, committed) in before.items():
        store = stores / f"{sid}.zarr"
        assert (store / "zarr.json").stat().st_mtime_ns == mtime, f"{sid} was rewritten"
        assert read_store_attrs(store)["parts"]["tiling"]["time"] == committed
    assert_complete_once(stores, ids)
    saved = json.loads((run_dir / "pipeline" / "report.json").read_text())
    assert saved["ok"] and saved["stages"][0]["skipped"] == len(complete)
