"""``run_cohort``: any stage over a cohort, the one runner every stage goes through.

It resolves the slides (from a manifest, slide ids, or every store of the
project), checks the stage once in the driver, runs the slides with the stage's
executor, writes ``status/<stage>/<slide_id>.json`` as each slide ends, and
returns one :class:`CohortReport` (also ``status/<stage>.json`` and
``status/<stage>.csv``). One bad slide never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.errors import SlideflowError
from slideflow_core.ray_runtime import (
    local_resources,
    start_ray,
    starts_local_instance,
    wait_for_start,
)
from slideflow_core.stages.executors import RUNNERS, Sink
from slideflow_core.stages.outcome import CohortReport, SlideOutcome
from slideflow_core.stages.protocol import EXECUTORS, Placement, SlideRef, Stage

log = logging.getLogger(__name__)

CohortLike = Cohort | str | os.PathLike[str] | Iterable[str] | None


class StageError(SlideflowError):
    """A stage cannot run at all (no stores, no manifest, an unknown executor)."""


def _store_refs(layout: ProjectLayout, ids: Iterable[str]) -> tuple[list[SlideRef], list]:
    refs, failures = [], []
    for slide_id in ids:
        try:
            store = layout.store(slide_id)
        except ValueError as exc:
            failures.append(SlideOutcome.failed(str(slide_id), exc))
            continue
        refs.append(SlideRef(slide_id, str(store)))
    return refs, failures


def resolve_slides(
    stage: Stage, layout: ProjectLayout, cohort: CohortLike
) -> tuple[list[str], list[SlideRef], list[SlideOutcome]]:
    """Slide ids in order, the slides to run, and outcomes of slides that cannot run.

    A stage that reads slide files needs a cohort (its rows are validated, and a
    bad row fails that slide alone). Other stages work on stores: by default
    every store of the project; a slide without a store fails alone.
    """
    if isinstance(cohort, (str, os.PathLike)):
        cohort = Cohort.from_manifest(cohort)
    if stage.needs_slide_files:
        if not isinstance(cohort, Cohort):
            raise StageError(
                f"the {stage.name} stage reads slide files and needs a cohort manifest",
                hint="pass the manifest (slide_id, path, ...) of the slides",
            )
        problems: dict[str | None, list[str]] = {}
        for problem in cohort.validate(check_files=True).problems:
            problems.setdefault(problem.slide_id, []).append(str(problem))
        refs, failures = [], []
        for record in cohort:
            try:
                store = str(layout.store(record.slide_id))
            except ValueError as exc:
                failures.append(SlideOutcome.failed(record.slide_id, exc))
                continue
            if record.slide_id in problems:
                error = "; ".join(problems[record.slide_id])
                failures.append(SlideOutcome(record.slide_id, "failed", store, error=error))
                continue
            refs.append(
                SlideRef(record.slide_id, store, record.path, record.mpp, dict(record.labels))
            )
        return list(cohort.slide_ids), refs, failures
    if cohort is None:
        if not layout.stores_dir.is_dir():
            raise StageError(
                f"{layout.root} has no stores folder", hint="tile the cohort first (sfc tile)"
            )
        ids = sorted(p.name.removesuffix(".zarr") for p in layout.stores_dir.glob("*.zarr"))
        refs, failures = _store_refs(layout, ids)
        return ids, refs, failures
    if isinstance(cohort, Cohort):
        labels = {r.slide_id: dict(r.labels) for r in cohort}
        ids = list(cohort.slide_ids)
    else:
        ids, labels = [str(i) for i in cohort], {}
    refs, failures = _store_refs(layout, ids)
    present = []
    for ref in refs:
        if Path(ref.store).is_dir():
            present.append(SlideRef(ref.slide_id, ref.store, labels=labels.get(ref.slide_id, {})))
        else:
            error = StageError(
                f"{ref.slide_id} has no store at {ref.store}", hint="tile it first (sfc tile)"
            )
            failures.append(SlideOutcome.failed(ref.slide_id, error, store=ref.store))
    return ids, present, failures


@contextlib.contextmanager
def stage_lock(layout: ProjectLayout, stage: Stage) -> Iterator[None]:
    """Hold the project's lock for one stage's part, or fail at once if another run holds it.

    Two runs of one stage on one project would plan the same slides and undo each
    other's work; runs of other stages, or of the same stage writing another part
    (a second embedding model), go on side by side. The lock is an advisory
    ``fcntl`` lock on ``status/.<stage>-<part>.lock``, released when the run ends or
    its process dies.
    """
    if fcntl is None:  # pragma: no cover - no advisory locks on this platform
        yield
        return
    part = stage.part().replace("/", "~")
    path = layout.status_dir / f".{stage.name}-{part}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StageError(
                f"another {stage.name} run ({holder}) is writing {stage.part()} in {layout.root}",
                hint="wait for it to finish (or stop it), then rerun: it picks up what is left",
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _StatusWriter:
    """Writes status files; a failed write (a full disk) is logged once, never raised."""

    def __init__(self, layout: ProjectLayout, stage: str) -> None:
        self.layout = layout
        self.stage = stage
        self.warned = False

    def slide(self, outcome: SlideOutcome) -> None:
        self._guard(self.layout.write_status, outcome.slide_id, outcome.to_dict(), self.stage)

    def report(self, report: CohortReport) -> None:
        folder = self.layout.status_dir
        self._guard(_write_text, folder / f"{self.stage}.json", report.to_json())
        table = report.to_frame().to_csv(index=False)
        self._guard(_write_text, folder / f"{self.stage}.csv", table)

    def _guard(self, write: Any, *args: Any) -> None:
        try:
            write(*args)
        except OSError as exc:
            if not self.warned:
                log.warning("could not write the %s status files: %s", self.stage, exc)
                self.warned = True


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def choose_executor(
    stage: Stage,
    executor: str | None,
    n_slides: int,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
) -> tuple[str, Placement | None]:
    """Where the slides run, and (for ``local``) the placement an actor would have had.

    An explicit ``executor`` is obeyed. Otherwise the stage's own, except for a
    tiny cohort: when Ray would have to be started for it (no address, no
    ``$RAY_ADDRESS``, no Ray in this process) and at most ``stage.local_slides``
    slides have work, they run in this process, one after another. For an actor
    stage this holds only when it would start a single CPU actor; its work then
    runs with that actor's threads. For a task stage whose units may run at once
    (``concurrent_units``, e.g. tiling's bands), the units run on one thread per
    core. What is saved is starting Ray (5-8 s) before the first tile. What is
    lost is a worker's isolation: a crash ends this process (committed slides
    stay committed; a rerun finishes the rest).
    """
    if executor is not None:
        return executor, None
    if not 0 < n_slides <= stage.local_slides or not starts_local_instance(address):
        return stage.executor, None
    if stage.executor != "actors":
        return "local", None
    plan = stage.actors(local_resources(num_cpus), n_slides)
    if plan.count == 1 and not plan.num_gpus:
        return "local", plan.placement
    return stage.executor, None


def run_cohort(
    stage: Stage,
    project: str | os.PathLike[str],
    cohort: CohortLike = None,
    *,
    overwrite: bool = False,
    executor: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    max_in_flight: int | None = None,
) -> CohortReport:
    """Run ``stage`` on every slide of a cohort; each slide ends done, skipped or failed.

    Slides already known done (:meth:`Stage.settled`) are skipped first, in this
    process; the workers (and Ray) start only when some slide has work, and Ray
    starts in the background while the stage's checks run.

    Parameters
    ----------
    stage
        A stage (``create_stage("tile", {...})`` or a stage object).
    project
        The project folder (``stores/``, ``status/``...; created when the stage's
        checks pass).
    cohort
        A :class:`~slideflow_core.cohort.Cohort`, a manifest path, slide ids, or
        ``None`` for every store of the project (stages that work on stores).
    overwrite
        Redo slides whose output is complete, or was made differently.
    executor
        ``"tasks"``, ``"actors"`` or ``"local"`` (this process, no Ray); default:
        the stage's own (see :func:`choose_executor` for tiny cohorts).
    address, num_cpus
        Ray cluster address (``None``: ``$RAY_ADDRESS`` or a local instance) and
        cores of a local instance.
    progress
        Show a progress bar (tiles, tiles/s, slides).
    max_in_flight
        Ray tasks in flight at once (default: twice the cluster's CPUs).

    Returns
    -------
    CohortReport
        One outcome per slide, in cohort order; ``startup_seconds`` is the time
        until the workers could take their first slide (checks, Ray, models).

    Raises
    ------
    StageError
        If the stage cannot run at all (see :meth:`Stage.prepare` for its own checks).
    """
    started = time.time()
    if executor is not None and executor not in EXECUTORS:
        raise StageError(f"unknown executor {executor!r}", hint=f"one of {', '.join(EXECUTORS)}")
    layout = ProjectLayout(Path(project))
    ids, slides, results = resolve_slides(stage, layout, cohort)
    todo: list[SlideRef] = []
    settled: list[SlideOutcome] = []
    for slide in slides:  # in this process, before any worker or model is built
        known = stage.settled(slide, overwrite=overwrite)
        if known is None:
            todo.append(slide)
        else:
            settled.append(known)
    chosen, placement = choose_executor(
        stage, executor, len(todo), address=address, num_cpus=num_cpus
    )
    if todo and chosen != "local":
        start_ray(address, num_cpus=num_cpus)  # goes on while the stage's checks run
    try:
        stage.prepare(layout)  # before any folder is made: a mistyped project makes nothing
        layout.ensure()
        with stage_lock(layout, stage):
            return _run_locked(
                stage, layout, ids, todo, results, settled, started,
                overwrite=overwrite, executor=chosen, placement=placement, address=address,
                num_cpus=num_cpus, progress=progress, max_in_flight=max_in_flight,
            )  # fmt: skip
    finally:
        wait_for_start()  # never leave a half-started Ray behind


def _run_locked(
    stage: Stage,
    layout: ProjectLayout,
    ids: list[str],
    slides: list[SlideRef],
    results: list[SlideOutcome],
    settled: list[SlideOutcome],
    started: float,
    *,
    overwrite: bool,
    executor: str,
    progress: bool,
    **options: Any,
) -> CohortReport:
    """The run itself, under the stage's project lock."""
    status = _StatusWriter(layout, stage.name)
    results += settled
    for outcome in results:
        status.slide(outcome)
    bar = tqdm(total=0, unit="tile", disable=not progress, dynamic_ncols=True, desc=stage.name)

    def finished(outcome: SlideOutcome) -> None:
        results.append(outcome)
        status.slide(outcome)
        if outcome.disk_full and not sink.stopped:
            sink.stopped = True
            log.error("%s: %s; no new slide is started", outcome.slide_id, outcome.error)
        bar.set_postfix_str(f"slides {len(results)}/{len(ids)}", refresh=False)
        bar.refresh()

    def planned(n: int) -> None:
        bar.total += n

    sink = Sink(finished, planned, bar.update)
    try:
        if slides:
            RUNNERS[executor](stage, slides, sink, overwrite=overwrite, **options)
    finally:
        bar.close()
    if sink.stopped:  # the slides never started: say why, so a rerun is the obvious fix
        ended = {r.slide_id for r in results}
        full = next(r for r in results if r.disk_full)
        for slide in slides:
            if slide.slide_id not in ended:
                outcome = SlideOutcome(
                    slide.slide_id,
                    "blocked",
                    slide.store,
                    error=f"not started: the disk filled up while {full.slide_id} was written",
                    hint=full.hint,
                )
                results.append(outcome)
                status.slide(outcome)
    rank = {sid: i for i, sid in enumerate(ids)}
    results.sort(key=lambda r: rank.get(r.slide_id, len(rank)))
    ended = time.time()
    report = CohortReport(
        stage=stage.name,
        part=stage.part(),
        results=tuple(results),
        seconds=ended - started,
        project=str(layout.root),
        # Until the workers could take a slide: checks, Ray, models (all of it when none ran).
        startup_seconds=(sink.ready_at or ended) - started,
        info=sink.info,
    )
    stage.finish(layout, report)
    status.report(report)
    return report
