"""Where a stage's work runs: this process, Ray tasks, or Ray actors.

Every executor takes the slides to do and a :class:`Sink` (the driver's side:
progress, status files, outcomes), keeps a bounded amount of work in flight, and
turns any error of one slide into that slide's ``failed`` outcome so the rest go
on. Ray retries tasks whose worker died (``max_retries``) and restarts dead
actors (``max_restarts``); a stage's own errors are deterministic and not retried.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from slideflow_core.errors import SlideflowError
from slideflow_core.ray_runtime import ensure_ray
from slideflow_core.stages.outcome import SlideOutcome
from slideflow_core.stages.protocol import Placement, Plan, SlideRef, Stage, Unit

#: Ray retries of a task whose worker process (or node) died.
TASK_RETRIES = 3
#: Restarts of a dead actor, and retries of the slide it was working on.
ACTOR_RESTARTS = 3
ACTOR_TASK_RETRIES = 2


class Sink:
    """The driver's side of a run: counts tiles for the progress bar and takes outcomes."""

    def __init__(
        self,
        finished: Callable[[SlideOutcome], None],
        planned: Callable[[int], None],
        advanced: Callable[[int], None],
    ) -> None:
        self.finished = finished
        self.planned = planned
        self.advanced = advanced
        #: When the workers were ready for their first slide (``time.time()``).
        self.ready_at: float | None = None
        self.info: dict[str, Any] = {}
        #: Set when a slide failed for a full disk: no new slide is started after it.
        self.stopped = False

    def ready(self) -> None:
        """The workers are ready: start-up ends here, the slides' own time begins."""
        self.ready_at = time.time()

    def seen(self, tiles: int) -> None:
        """Tiles whose slide's size was not known beforehand, counted and done at once."""
        self.planned(tiles)
        self.advanced(tiles)


def run_slide(
    stage: Stage,
    slide: SlideRef,
    resource: Any,
    *,
    overwrite: bool,
    progress: Callable[[int], None] | None = None,
) -> SlideOutcome:
    """Plan, run every unit and commit one slide in this process; errors raise.

    ``progress(tiles)`` is told the tiles done so far in the slide.
    """
    planned = stage.plan(slide, resource, overwrite=overwrite)
    if isinstance(planned, SlideOutcome):
        return planned
    return run_plan(stage, planned, resource, progress)


def run_plan(
    stage: Stage,
    planned: Plan,
    resource: Any,
    progress: Callable[[int], None] | None,
    *,
    cpus: int | None = None,
) -> SlideOutcome:
    """Run a planned slide's units on ``cpus`` cores (default: all), then commit it.

    Units of a spread plan run one after another, each given every core
    (:attr:`Unit.threads`); others run one after another, or on one thread per
    core when the stage's units may run at once (``concurrent_units``).
    Progress is the sum over units.
    """
    cpus = cpus or os.cpu_count() or 1
    units = planned.units
    if planned.spread:
        units = tuple(replace(unit, threads=cpus) for unit in units)
    lock = threading.Lock()
    shown = [0] * len(units)

    def run(index: int) -> Any:
        def report(n: int) -> None:
            with lock:  # one report at a time: the totals reach the bar in order
                shown[index] = n
                if progress is not None:
                    progress(sum(shown))

        result = stage.run(planned, units[index], resource, report)
        report(units[index].n_tiles)
        return result

    concurrent = stage.concurrent_units and not planned.spread
    workers = min(len(units), cpus) if concurrent else 1
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix=f"{stage.name}-unit") as pool:
            results = list(pool.map(run, range(len(units))))
    else:
        results = [run(index) for index in range(len(units))]
    return stage.commit(planned, results, resource)


def process_slide(
    stage: Stage,
    slide: SlideRef,
    resource: Any,
    *,
    overwrite: bool,
    progress: Callable[[int], None] | None = None,
) -> SlideOutcome:
    """:func:`run_slide` with the slide's error turned into its ``failed`` outcome."""
    started = time.time()
    try:
        return run_slide(stage, slide, resource, overwrite=overwrite, progress=progress)
    except Exception as exc:
        return SlideOutcome.failed(
            slide.slide_id, exc, store=slide.store, seconds=time.time() - started
        )


def _cause(exc: BaseException) -> BaseException:
    """The stage's own error behind a Ray error (or the Ray error itself)."""
    return getattr(exc, "cause", None) or exc


def _ignore(_: int) -> None:
    """Progress inside a Ray task is not reported (its unit's tiles count when it ends)."""


def run_local(
    stage: Stage,
    slides: Sequence[SlideRef],
    sink: Sink,
    *,
    overwrite: bool,
    placement: Placement | None = None,
    **_: Any,
) -> None:
    """Every slide in this process, one after another, with one ``setup``.

    ``placement``: what one actor would have had (device, threads); ``None``
    keeps this process's defaults.
    """
    try:
        resource = stage.setup(placement)
    except SlideflowError:
        raise
    except Exception as exc:  # one error line, as when an actor cannot start
        raise _startup_error(stage, exc) from exc
    sink.ready()
    where = f" ({placement.threads} threads)" if placement and placement.threads else ""
    sink.info.update(executor=f"local{where}", **stage.describe(resource))
    for slide in slides:
        if sink.stopped:
            break
        shown = 0

        def progress(done: int) -> None:
            nonlocal shown
            if done > shown:  # the bar's total grows as slides reveal their size
                sink.seen(done - shown)
                shown = done

        outcome = process_slide(stage, slide, resource, overwrite=overwrite, progress=progress)
        if outcome.status == "done":
            progress(outcome.n_tiles)
        sink.finished(outcome)


# -- Ray tasks ------------------------------------------------------------------------------
def _plan_task(stage: Stage, slide: SlideRef, resource: Any, overwrite: bool, whole: bool) -> Any:
    """Plan a slide; a slide of one unit (or none left), or any if ``whole``, is also run and
    committed here."""
    planned = stage.plan(slide, resource, overwrite=overwrite)
    if isinstance(planned, SlideOutcome) or (len(planned.units) > 1 and not whole):
        return planned
    return run_plan(stage, planned, resource, None, cpus=1)  # the task reserved one CPU


def _unit_task(stage: Stage, plan: Plan, unit: Unit, resource: Any) -> Any:
    return stage.run(plan, unit, resource, _ignore)


def _commit_task(stage: Stage, plan: Plan, results: list[Any], resource: Any) -> SlideOutcome:
    return stage.commit(plan, results, resource)


@functools.cache
def _remote_tasks(ray: Any) -> dict[str, Any]:
    options = {"num_cpus": 1, "max_retries": TASK_RETRIES, "retry_exceptions": False}
    return {
        "plan": ray.remote(**options)(_plan_task),
        "unit": ray.remote(**options)(_unit_task),
        "commit": ray.remote(**options)(_commit_task),
    }


def run_tasks(
    stage: Stage,
    slides: Sequence[SlideRef],
    sink: Sink,
    *,
    overwrite: bool,
    address: str | None = None,
    num_cpus: int | None = None,
    max_in_flight: int | None = None,
    **_: Any,
) -> None:
    """Ray tasks, a bounded number in flight: one per slide while at least as many slides
    wait as the cluster has CPUs, then one per plan, per unit and per commit, so the last
    slides spread over every CPU.

    Units of planned slides go before new slides, so a slide finishes (and frees
    its memory and scratch space) before many others start.
    """
    ray = ensure_ray(address, num_cpus=num_cpus)
    remote = _remote_tasks(ray)
    resource = stage.setup(None)
    shared = ray.put(resource) if resource is not None else None
    sink.ready()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    limit = max_in_flight or max(2, 2 * cpus)
    sink.info.update(executor=f"Ray tasks ({cpus} CPUs, {limit} in flight)")
    sink.info.update(stage.describe(resource))
    todo = deque(slides)
    work: deque[tuple[Plan, Unit]] = deque()
    pending: dict[Any, tuple[str, SlideRef, Unit | None]] = {}
    plans: dict[str, tuple[Plan, dict[int, Any]]] = {}
    began: dict[str, float] = {}
    broken: set[str] = set()

    def submit() -> None:
        while len(pending) < limit and (work or (todo and not sink.stopped)):
            if work:
                plan, unit = work.popleft()
                if plan.slide.slide_id not in broken:
                    ref = remote["unit"].remote(stage, plan, unit, shared)
                    pending[ref] = ("unit", plan.slide, unit)
                continue
            slide = todo.popleft()
            began[slide.slide_id] = time.time()
            # While enough slides wait to keep every CPU busy, a slide's units run in its
            # plan task: no copy of the plan per unit, two task round trips instead of N + 2.
            whole = len(todo) >= cpus
            ref = remote["plan"].remote(stage, slide, shared, overwrite, whole)
            pending[ref] = ("plan", slide, None)

    submit()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        kind, slide, unit = pending.pop(ready[0])
        sid = slide.slide_id
        try:
            value = ray.get(ready[0])
        except Exception as exc:
            if sid not in broken:
                broken.add(sid)
                plans.pop(sid, None)
                seconds = time.time() - began[sid]
                sink.finished(
                    SlideOutcome.failed(sid, _cause(exc), store=slide.store, seconds=seconds)
                )
            submit()
            continue
        if sid in broken:
            pass  # an earlier unit of this slide failed; its partial output stays partial
        elif kind == "plan" and isinstance(value, Plan):
            plans[sid] = (value, {})
            sink.planned(value.n_tiles)
            work.extend((value, unit) for unit in value.units)
        elif kind == "unit" and unit is not None:
            plan, done = plans[sid]
            done[unit.index] = value
            sink.advanced(unit.n_tiles)
            if len(done) == len(plan.units):
                ordered = [done[u.index] for u in plan.units]
                ref = remote["commit"].remote(stage, plan, ordered, shared)
                pending[ref] = ("commit", slide, None)
        else:  # an outcome: a skip, a one-unit slide, or a commit
            if kind == "plan" and value.status == "done":
                sink.seen(value.n_tiles)
            plans.pop(sid, None)
            sink.finished(value)
        submit()


# -- Ray actors -----------------------------------------------------------------------------
class StageWorker:
    """Holds what ``stage.setup`` built and does whole slides with it, one at a time.

    ``progress`` runs in its own concurrency group, so the driver can ask how far
    the current slide is while ``process`` is busy.
    """

    def __init__(self, stage: Stage, placement: Placement) -> None:
        self._stage = stage
        self._error: Exception | None = None
        self._resource: Any = None
        try:
            self._resource = stage.setup(placement)
        except Exception as exc:  # raised again by describe(): a task error keeps its cause
            self._error = exc
        self._current: tuple[str, int] = ("", 0)

    def describe(self) -> dict[str, Any]:
        """What this worker holds (and its process id); raises the error that stopped setup."""
        if self._error is not None:
            raise self._error
        return {**self._stage.describe(self._resource), "pid": os.getpid()}

    def process(self, slide: SlideRef, overwrite: bool) -> SlideOutcome:
        """Plan, run and commit one slide."""
        self._current = (slide.slide_id, 0)

        def progress(done: int) -> None:
            self._current = (slide.slide_id, done)

        return process_slide(
            self._stage, slide, self._resource, overwrite=overwrite, progress=progress
        )

    def progress(self) -> tuple[str, int]:
        """``(slide_id, tiles done)`` of the slide in hand."""
        return self._current


@functools.cache
def _actor_class(ray: Any) -> Any:
    class _Worker(StageWorker):
        @ray.method(concurrency_group="status", max_task_retries=0)
        def progress(self) -> tuple[str, int]:
            return super().progress()

    _Worker.__name__ = _Worker.__qualname__ = "StageWorker"
    return ray.remote(concurrency_groups={"status": 1})(_Worker)


def _startup_error(stage: Stage, exc: BaseException) -> SlideflowError:
    cause = _cause(exc)
    if isinstance(cause, SlideflowError):
        return cause
    text = str(cause).strip().splitlines()
    return SlideflowError(
        f"the {stage.name} stage's workers could not start: "
        + (text[-1] if text else type(cause).__name__),
        hint="build the same thing in Python in this process to see the full error; "
        "see the Ray logs",
    )


def run_actors(
    stage: Stage,
    slides: Sequence[SlideRef],
    sink: Sink,
    *,
    overwrite: bool,
    address: str | None = None,
    num_cpus: int | None = None,
    **_: Any,
) -> None:
    """Long-lived actors (one per GPU, or CPU actors sharing the cores), one slide each in flight.

    An actor that dies beyond its restarts fails its slide and is replaced.
    """
    ray = ensure_ray(address, num_cpus=num_cpus)
    plan = stage.actors(ray.cluster_resources(), len(slides))
    cls = _actor_class(ray).options(
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
        max_restarts=ACTOR_RESTARTS,
        max_task_retries=ACTOR_TASK_RETRIES,
    )

    def start() -> Any:
        return cls.remote(stage, plan.placement)

    actors = [start() for _ in range(plan.count)]
    try:
        sink.info.update(ray.get(actors[0].describe.remote()))
    except ray.exceptions.RayError as exc:
        for actor in actors:
            ray.kill(actor)
        raise _startup_error(stage, exc) from exc
    sink.ready()
    sink.info.update(executor=plan.describe())
    todo = deque(slides)
    pending: dict[Any, tuple[int, SlideRef]] = {}
    polls: dict[int, Any] = {}
    shown: dict[str, int] = {}  # tiles of each running slide already on the bar

    def count(slide_id: str, done: int) -> None:
        # The bar's total grows with the work seen: a slide's size is known once it runs.
        delta = done - shown.get(slide_id, 0)
        if delta > 0:
            shown[slide_id] = done
            sink.seen(delta)

    def submit(index: int) -> None:
        if todo and not sink.stopped:
            slide = todo.popleft()
            shown[slide.slide_id] = 0
            pending[actors[index].process.remote(slide, overwrite)] = (index, slide)

    def poll() -> None:
        if polls:
            ready, _ = ray.wait(list(polls.values()), num_returns=len(polls), timeout=0)
            for index, ref in list(polls.items()):
                if ref in ready:
                    del polls[index]
                    with contextlib.suppress(ray.exceptions.RayError):  # restarting
                        slide_id, done = ray.get(ref)
                        if slide_id in shown:
                            count(slide_id, done)
        for index, actor in enumerate(actors):
            if index not in polls:
                polls[index] = actor.progress.remote()

    try:
        for index in range(len(actors)):
            submit(index)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                index, slide = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    ray.kill(actors[index])
                    actors[index] = start()
                    polls.pop(index, None)
                    error = SlideflowError(
                        f"its {stage.name} actor died: {str(_cause(exc)).splitlines()[-1]}",
                        hint="see the Ray logs (out of memory?); rerun to retry the slide",
                    )
                    outcome = SlideOutcome.failed(slide.slide_id, error, store=slide.store)
                if outcome.status == "done":
                    count(slide.slide_id, outcome.n_tiles)
                shown.pop(slide.slide_id, None)
                sink.finished(outcome)
                submit(index)
            poll()
    finally:
        for actor in actors:
            ray.kill(actor)


RUNNERS: dict[str, Callable[..., None]] = {
    "local": run_local,
    "tasks": run_tasks,
    "actors": run_actors,
}
