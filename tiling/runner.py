"""Tiling a cohort on Ray: one task per slide, bands of large slides in parallel.

The driver keeps a bounded number of tasks in flight, so its memory does not
grow with the cohort. Every slide ends as ``done``, ``skipped`` (a compatible
complete store exists) or ``failed`` with its error; one bad slide never stops
the others. Per-slide status files and a summary table are written at the end.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.ray_runtime import ensure_ray
from tiling.config import TilingConfig
from tiling.job import (
    SlidePlan,
    SlideResult,
    SlideTask,
    check_existing,
    commit_slide,
    failed,
    plan_slide,
    tile_band,
)


@dataclass(frozen=True)
class TilingReport:
    """Per-slide outcomes of a cohort run, with totals."""

    results: tuple[SlideResult, ...]
    seconds: float
    out: str

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed

    @property
    def failed(self) -> list[SlideResult]:
        """Results of slides that failed."""
        return [r for r in self.results if r.status == "failed"]

    def to_frame(self) -> pd.DataFrame:
        """One row per slide: id, status, tiles, kept, seconds, error, store."""
        rows = [{k: v for k, v in asdict(r).items() if k != "details"} for r in self.results]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        frame = self.to_frame()
        if not len(frame):
            return "(no slides)"
        table = frame[["slide_id", "status", "n_tiles", "n_kept", "seconds"]].copy()
        table["seconds"] = table["seconds"].map(lambda v: f"{v:.1f}")
        tiles = int(frame["n_tiles"].sum())
        counts = frame["status"].value_counts().to_dict()
        rate = f" ({tiles / self.seconds:.0f} tiles/s)" if self.seconds > 0 and tiles else ""
        lines = [table.to_string(index=False)]
        lines += [f"  {r.slide_id}: {r.error}" for r in self.failed]
        lines.append(
            f"{len(frame)} slides: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"; {tiles} tiles in {self.seconds:.1f}s{rate}"
        )
        return "\n".join(lines)


def _remote_functions(ray: Any) -> dict[str, Any]:
    # Worker deaths are retried by Ray; our own errors are deterministic, so not.
    options = {"num_cpus": 1, "max_retries": 3, "retry_exceptions": False}

    @ray.remote(**options)
    def plan_or_tile(task: SlideTask, overwrite: bool) -> SlidePlan | SlideResult:
        existing = check_existing(task, overwrite=overwrite)
        if existing is not None:
            return existing
        plan = plan_slide(task)
        if len(plan.bands) > 1:
            return plan
        return commit_slide(plan, [tile_band(plan, *band) for band in plan.bands])

    @ray.remote(**options)
    def band(plan: SlidePlan, start: int, stop: int) -> dict[str, Any]:
        return tile_band(plan, start, stop)

    @ray.remote(**options)
    def commit(plan: SlidePlan, bands: list[dict[str, Any]]) -> SlideResult:
        return commit_slide(plan, bands)

    return {"plan": plan_or_tile, "band": band, "commit": commit}


def _write_status(layout: ProjectLayout, result: SlideResult) -> None:
    layout.write_status(result.slide_id, asdict(result))


def _tasks(
    cohort: Cohort, layout: ProjectLayout, config: TilingConfig
) -> tuple[list[SlideTask], list[SlideResult]]:
    """Tasks for valid rows; immediate failures for rows that cannot be tiled."""
    report = cohort.validate(check_files=True)
    problems: dict[str | None, list[str]] = {}
    for problem in report.problems:
        problems.setdefault(problem.slide_id, []).append(str(problem))
    tasks, failures = [], []
    for record in cohort:
        try:
            store = str(layout.store(record.slide_id))
        except ValueError as exc:
            failures.append(SlideResult(record.slide_id, "failed", "", error=str(exc)))
            continue
        if record.slide_id in problems:
            error = "; ".join(problems[record.slide_id])
            failures.append(SlideResult(record.slide_id, "failed", store, error=error))
            continue
        tasks.append(SlideTask(record.slide_id, record.path, store, config, mpp=record.mpp))
    return tasks, failures


def tile_cohort(
    cohort: Cohort | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TilingConfig | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    max_in_flight: int | None = None,
    **config_kwargs: Any,
) -> TilingReport:
    """Tile every slide of a cohort into ``<out>/stores/<slide_id>.zarr`` on Ray.

    Parameters
    ----------
    cohort
        A :class:`~slideflow_core.cohort.Cohort` or a manifest path.
    out
        Project directory (see :class:`~slideflow_core.cohort.ProjectLayout`).
    config
        Tiling configuration; or give its fields as keyword arguments
        (``mpp=0.5, tile_px=256, ...``).
    address
        Ray cluster address; ``None`` starts (or reuses) a local Ray instance.
    num_cpus
        Cores of a local Ray instance (default: all).
    overwrite
        Re-tile slides whose store was made with another configuration.
    progress
        Show a progress bar (tiles, tiles/s, slides).
    max_in_flight
        Tasks submitted at once (default: twice the cluster's CPUs).

    Returns
    -------
    TilingReport
        Per-slide outcomes; also written to ``<out>/tiling_summary.csv`` and
        ``<out>/status/<slide_id>.json``.
    """
    if config is not None and config_kwargs:
        raise TypeError("give either config= or its fields as keyword arguments, not both")
    config = config or TilingConfig(**config_kwargs)
    if not isinstance(cohort, Cohort):
        cohort = Cohort.from_manifest(cohort)
    layout = ProjectLayout(Path(out).resolve()).ensure()
    started = time.time()
    tasks, results = _tasks(cohort, layout, config)

    ray = ensure_ray(address, num_cpus=num_cpus)
    remote = _remote_functions(ray)
    limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    todo = deque(tasks)
    work: deque[tuple[SlidePlan, int, int]] = deque()  # bands go before new slides
    pending: dict[Any, tuple[str, SlideTask]] = {}
    submitted: dict[str, float] = {}
    plans: dict[str, tuple[SlidePlan, list[dict[str, Any]]]] = {}
    broken: set[str] = set()
    bar = tqdm(total=0, unit="tile", disable=not progress, dynamic_ncols=True)

    def finish(result: SlideResult) -> None:
        results.append(result)
        _write_status(layout, result)
        bar.set_postfix_str(f"slides {len(results)}/{len(cohort)}")

    def submit() -> None:
        while len(pending) < limit and (work or todo):
            if work:
                plan, start, stop = work.popleft()
                ref = remote["band"].remote(plan, start, stop)
                pending[ref] = ("band", plan.task)
            else:
                task = todo.popleft()
                submitted[task.slide_id] = time.time()
                pending[remote["plan"].remote(task, overwrite)] = ("plan", task)

    for result in results:
        _write_status(layout, result)
    submit()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        kind, task = pending.pop(ready[0])
        try:
            value = ray.get(ready[0])
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            if task.slide_id not in broken:
                broken.add(task.slide_id)
                finish(failed(task, cause, submitted[task.slide_id]))
            submit()
            continue
        if task.slide_id in broken:
            pass  # an earlier band of this slide failed; its partial store stays partial
        elif kind == "plan" and isinstance(value, SlidePlan):
            plans[task.slide_id] = (value, [])
            bar.total += value.n_tiles
            bar.refresh()
            work.extend((value, start, stop) for start, stop in value.bands)
        elif kind == "band":
            plan, done = plans[task.slide_id]
            done.append(value)
            bar.update(value["tiles"])
            if len(done) == len(plan.bands):
                pending[remote["commit"].remote(plan, done)] = ("commit", task)
        else:  # a finished slide: one-task tiling, a skip, or a commit
            if kind == "plan":
                bar.total += value.n_tiles
                bar.update(value.n_tiles)
            plans.pop(task.slide_id, None)
            finish(value)
        submit()
    bar.close()

    order = {sid: i for i, sid in enumerate(cohort.slide_ids)}
    results.sort(key=lambda r: order.get(r.slide_id, len(order)))
    report = TilingReport(tuple(results), time.time() - started, str(layout.root))
    report.to_frame().to_csv(layout.root / "tiling_summary.csv", index=False)
    return report
