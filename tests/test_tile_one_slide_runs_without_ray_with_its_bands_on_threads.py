"""One slide pays no Ray start-up: ``sfc tile`` of a one-slide manifest runs in its own process.

Run as a fresh ``sfc`` process with no Ray to join, the slide is tiled by the ``sfc``
process itself (executor ``local``), its bands on threads, and the store equals one made
by :func:`tiling.tile_slide`. In-process, a stage whose units may run at once gets one
thread per core, and the progress it reports only grows, to the slide's tile count; the
units of a spread plan run one after another with every core each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from slideflow_core.stages import Plan, SlideOutcome, StageDefaults, Unit
from slideflow_core.stages.executors import run_slide
from tiling import TilingConfig, open_store, tile_slide


def test_sfc_tile_of_one_slide_runs_here_and_equals_tile_slide(cmu_svs, tmp_path):
    manifest = tmp_path / "one.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    project = tmp_path / "project"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "slideflow_core.cli", "tile", str(manifest), "--out",
         str(project), "--target-mpp", "1.0", "--tile-px", "64", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((project / "status" / "tile.json").read_text())
    assert report["info"]["executor"] == "local"  # no Ray was started for one slide
    assert [r["status"] for r in report["results"]] == ["done"]

    reference = tile_slide(
        cmu_svs, tmp_path / "ref.zarr", TilingConfig(mpp=1.0, tile_px=64), slide_id="cmu"
    )
    ours, theirs = open_store(project / "stores" / "cmu.zarr"), open_store(reference.store)
    _assert_same_tiles(ours, theirs)


def test_a_slide_of_many_bands_tiled_here_on_threads_equals_tile_slide(
    cmu_svs, tmp_path, monkeypatch
):
    from slideflow_core.stages import run_cohort, runner
    from tiling.stage import TileStage

    monkeypatch.setattr(runner, "starts_local_instance", lambda address=None: True)
    config = TilingConfig(mpp=1.0, tile_px=64, shard_tiles=16, band_tiles=32)
    manifest = tmp_path / "one.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    report = run_cohort(TileStage(config), tmp_path / "p", manifest, progress=False)
    assert report.ok and report.info["executor"] == "local"
    reference = tile_slide(cmu_svs, tmp_path / "ref.zarr", config)
    ours = open_store(report.results[0].store)
    assert len(ours.coords) > 4 * config.band_tiles  # several bands, on two threads
    _assert_same_tiles(ours, open_store(reference.store))


def _assert_same_tiles(ours: Any, theirs: Any) -> None:
    np.testing.assert_array_equal(ours.coords, theirs.coords)
    everything = slice(0, len(theirs.coords))
    np.testing.assert_array_equal(ours.read_tiles(everything), theirs.read_tiles(everything))
    np.testing.assert_array_equal(ours.qc()["keep"], theirs.qc()["keep"])


class _Units(StageDefaults):
    """Four units of 10 tiles; each waits until two run at once (or times out)."""

    name: ClassVar[str] = "toy-units"
    executor: ClassVar[str] = "tasks"
    concurrent_units: ClassVar[bool] = True

    def __init__(self) -> None:
        self.config = None
        self.threads: set[str] = set()
        self.together = threading.Barrier(2, timeout=10)

    def plan(self, slide: Any, resource: Any, *, overwrite: bool) -> Plan:
        return Plan(slide, tuple(Unit(i, 10, None) for i in range(4)))

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> int:
        self.threads.add(threading.current_thread().name)
        progress(5)
        self.together.wait()  # breaks (and fails the test) if units ran one by one
        return unit.index


def test_units_that_may_run_at_once_run_on_threads_and_progress_only_grows(monkeypatch):
    from slideflow_core.stages import SlideRef

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    stage, seen = _Units(), []
    outcome = run_slide(stage, SlideRef("s", "s.zarr"), None, overwrite=False, progress=seen.append)
    assert isinstance(outcome, SlideOutcome) and outcome.n_tiles == 40
    assert len(stage.threads) == 2 and all(n.startswith("toy-units-unit") for n in stage.threads)
    assert seen == sorted(seen) and seen[-1] == 40


class _Spread(StageDefaults):
    """Three units that record their threads and whether another unit ran at the same time."""

    name: ClassVar[str] = "toy-spread"
    executor: ClassVar[str] = "tasks"
    concurrent_units: ClassVar[bool] = True

    def __init__(self) -> None:
        self.config = None
        self.threads: list[int] = []
        self.running = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def plan(self, slide: Any, resource: Any, *, overwrite: bool) -> Plan:
        return Plan(slide, tuple(Unit(i, 10, None) for i in range(3)), spread=True)

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> int:
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
            self.threads.append(unit.threads)
        threading.Event().wait(0.05)  # room for another unit to start, if one would
        with self.lock:
            self.running -= 1
        return unit.index


def test_units_of_a_spread_plan_run_one_at_a_time_each_with_every_core(monkeypatch):
    from slideflow_core.stages import SlideRef, run_plan

    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    stage = _Spread()
    outcome = run_slide(stage, SlideRef("s", "s.zarr"), None, overwrite=False)
    assert outcome.n_tiles == 30 and stage.threads == [3, 3, 3] and not stage.overlapped
    # In a Ray task, which reserves one CPU, the same plan's units get one thread.
    one_cpu = _Spread()
    run_plan(
        one_cpu, one_cpu.plan(SlideRef("s", "s.zarr"), None, overwrite=False), None, None, cpus=1
    )
    assert one_cpu.threads == [1, 1, 1]
