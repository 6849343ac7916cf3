"""Segmenting a project's slides on Ray: one task per band of tiles, one commit per slide.

The driver plans each slide (reading its store's kept tiles), submits a task for every
band not yet staged, keeping a bounded number in flight, and commits a slide's table
once its bands are in. Every slide ends ``done``, ``skipped`` (a complete table with the
same identity exists) or ``failed`` with its error; one bad slide never stops the rest.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from embedders.dense.bands import segment_band
from embedders.dense.base import Segmenter
from embedders.dense.plan import CellPlan, SegmentationError, SegmentConfig
from embedders.dense.slide import (
    SegmentResult,
    commit_cells,
    resolve_segmenter,
    start_run,
)
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.errors import failure_text
from slideflow_core.ray_runtime import ensure_ray


@dataclass(frozen=True)
class SegmentationReport:
    """Per-slide outcomes of segmenting a project, with totals."""

    results: tuple[SegmentResult, ...]
    seconds: float
    project: str
    name: str

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed

    @property
    def failed(self) -> list[SegmentResult]:
        """Results of the slides that failed."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def n_cells(self) -> int:
        """Cells written in this run."""
        return sum(r.n_cells for r in self.results if r.status == "done")

    def to_frame(self) -> pd.DataFrame:
        """One row per slide: id, status, cells, tiles, seconds, error, output."""
        return pd.DataFrame(
            [{k: v for k, v in r.to_dict().items() if k != "details"} for r in self.results]
        )

    def __str__(self) -> str:
        frame = self.to_frame()
        if not len(frame):
            return f"(no slides) cells/{self.name}"
        table = frame[["slide_id", "status", "n_tiles", "n_cells", "seconds"]].copy()
        table["seconds"] = table["seconds"].map(lambda v: f"{v:.1f}")
        counts = frame["status"].value_counts().to_dict()
        rate = self.n_cells / self.seconds if self.seconds > 0 else 0.0
        lines = [table.to_string(index=False)]
        lines += [f"  {r.slide_id}: {r.error}" for r in self.failed]
        lines.append(
            f"{len(frame)} slides: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"; {self.n_cells} cells into cells/{self.name} in {self.seconds:.1f}s "
            f"({rate:.0f} cells/s)"
        )
        return "\n".join(lines)


def _remote_functions(ray: Any) -> dict[str, Any]:
    # Worker deaths are retried by Ray; our own errors are deterministic, so not.
    options = {"num_cpus": 1, "max_retries": 3, "retry_exceptions": False}

    @ray.remote(**options)
    def band(plan: CellPlan, segmenter: Segmenter, index: int) -> dict[str, Any]:
        return segment_band(plan, segmenter, index)

    @ray.remote(**options)
    def commit(plan: CellPlan, segmenter: Segmenter, bands: list[dict[str, Any]]) -> int:
        return commit_cells(plan, segmenter, bands)

    return {"band": band, "commit": commit}


def _store_paths(
    layout: ProjectLayout, cohort: Cohort | str | os.PathLike[str] | Iterable[str] | None
) -> list[tuple[str, Path]]:
    if cohort is None:
        paths = sorted(p for p in layout.stores_dir.glob("*.zarr") if p.is_dir())
        return [(p.name.removesuffix(".zarr"), p) for p in paths]
    if isinstance(cohort, (str, os.PathLike)):
        cohort = Cohort.from_manifest(cohort)
    ids = cohort.slide_ids if isinstance(cohort, Cohort) else list(cohort)
    return [(slide_id, layout.stores_dir / f"{slide_id}.zarr") for slide_id in ids]


def segment_cohort(
    project: str | os.PathLike[str],
    segmenter: Segmenter | str = "classical",
    *,
    cohort: Cohort | str | os.PathLike[str] | Iterable[str] | None = None,
    config: SegmentConfig | None = None,
    name: str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    max_in_flight: int | None = None,
    **config_kwargs: Any,
) -> SegmentationReport:
    """Segment every slide store of a project into its ``cells/<name>`` part, on Ray.

    Parameters
    ----------
    project
        Project directory holding ``stores/<slide_id>.zarr`` (from ``tiling.tile_cohort``).
    segmenter
        A segmenter object (sent to the workers once) or a registered name.
    cohort
        Only these slides: a cohort, a manifest path or slide ids (default: every store).
    config
        Window grid; or give its fields as keyword arguments.
    name
        Run name (default: the segmenter's name).
    overwrite
        Redo slides whose table is complete or was made differently.
    address, num_cpus
        Ray cluster address (``None``: local Ray) and cores of a local instance.
    progress
        Show a progress bar over tiles.
    max_in_flight
        Band tasks submitted at once (default: twice the cluster's CPUs).

    Returns
    -------
    SegmentationReport
        Per-slide outcomes; each also written to ``<project>/status/segment-<name>/``.
    """
    started = time.time()
    if config is not None and config_kwargs:
        raise TypeError("give either config= or its fields as keyword arguments, not both")
    config = config or SegmentConfig(**config_kwargs)
    segmenter = resolve_segmenter(segmenter)
    layout = ProjectLayout(Path(project).resolve())
    if not layout.stores_dir.is_dir():
        raise SegmentationError(
            f"{layout.root} has no stores folder", hint="tile the cohort first (sfc tile)"
        )
    results: dict[str, SegmentResult] = {}
    plans: dict[str, CellPlan] = {}
    order = []
    for slide_id, store in _store_paths(layout, cohort):
        order.append(slide_id)
        t0 = time.time()
        try:
            if not store.is_dir():
                raise SegmentationError(f"{slide_id} has no store at {store}", hint="sfc tile")
            planned = start_run(store, segmenter, config, name=name, overwrite=overwrite)
        except Exception as exc:
            results[slide_id] = SegmentResult(
                slide_id, "failed", str(store), seconds=time.time() - t0, error=failure_text(exc)
            )
            continue
        if isinstance(planned, SegmentResult):
            results[slide_id] = planned
        else:
            plans[slide_id] = planned
    run_name = next(iter(plans.values())).name if plans else (name or segmenter.name)
    stage = f"segment-{run_name}"

    if plans:
        ray = ensure_ray(address, num_cpus=num_cpus)
        remote = _remote_functions(ray)
        shared = ray.put(segmenter)
        limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        work = deque(
            (sid, b)
            for sid, plan in plans.items()
            for b in range(len(plan.bands))
            if not plan.band_file(b).is_file()
        )
        waiting = {sid: sum(1 for s, _ in work if s == sid) for sid in plans}
        done_bands: dict[str, list[dict[str, Any]]] = {sid: [] for sid in plans}
        pending: dict[Any, tuple[str, str]] = {}
        began = {sid: time.time() for sid in plans}
        bar = tqdm(
            total=sum(len(p.cores) for p in plans.values()),
            unit="tile",
            disable=not progress,
            dynamic_ncols=True,
        )

        def finish(sid: str, ref_value: Any = None, error: BaseException | None = None) -> None:
            plan = plans[sid]
            seconds = time.time() - began[sid]
            if error is not None:
                result = SegmentResult(
                    sid, "failed", plan.output, seconds=seconds, error=failure_text(error)
                )
            else:
                result = SegmentResult(
                    sid,
                    "done",
                    plan.output,
                    n_cells=ref_value,
                    n_tiles=len(plan.cores),
                    seconds=seconds,
                    details={"bands": len(plan.bands), "mpp": plan.mpp},
                )
            results[sid] = result
            layout.write_status(sid, result.to_dict(), stage)

        def submit_commits() -> None:
            for sid in list(waiting):
                if waiting[sid] == 0:
                    del waiting[sid]
                    ref = remote["commit"].remote(plans[sid], shared, done_bands[sid])
                    pending[ref] = ("commit", sid)

        submit_commits()
        while work or pending:
            while work and len(pending) < limit:
                sid, b = work.popleft()
                if sid in results:  # the slide already failed
                    continue
                pending[remote["band"].remote(plans[sid], shared, b)] = ("band", sid)
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            kind, sid = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except Exception as exc:
                if sid not in results:
                    waiting.pop(sid, None)
                    finish(sid, error=getattr(exc, "cause", None) or exc)
                continue
            if sid in results:
                continue
            if kind == "band":
                done_bands[sid].append(value)
                waiting[sid] -= 1
                bar.update(value["tiles"])
                submit_commits()
            else:
                finish(sid, value)
        bar.close()

    for sid, result in results.items():
        if result.status != "done" and sid not in plans:
            layout.write_status(sid, result.to_dict(), stage)
    report = SegmentationReport(
        tuple(results[sid] for sid in order if sid in results),
        time.time() - started,
        str(layout.root),
        run_name,
    )
    report.to_frame().to_csv(layout.root / f"{stage}_summary.csv", index=False)
    return report
