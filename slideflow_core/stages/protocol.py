"""What a stage is: a frozen config, the part it writes, and plan → run → commit per slide.

Tiling, embedding, cells, MIL prediction and export differ only in what they
compute per slide. Each says so through :class:`Stage`; everything that is the
same for all of them (Ray tasks or actors, bounded in-flight work, failure
isolation, retries, progress, status files, the report) belongs to
:func:`slideflow_core.stages.run_cohort`.

A stage's methods run where the executor puts them: ``plan``, ``run`` and
``commit`` on Ray workers (so a stage object and everything it returns must
pickle), ``prepare`` and ``finish`` in the driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from slideflow_core.cohort import ProjectLayout
from slideflow_core.stages.outcome import CohortReport, SlideOutcome

#: Where a stage's work runs: Ray tasks, long-lived Ray actors, or this process.
EXECUTORS: tuple[str, ...] = ("tasks", "actors", "local")


@dataclass(frozen=True)
class SlideRef:
    """One slide as a stage sees it: its id, its store and (when known) its file.

    Attributes
    ----------
    slide_id
        The slide's id (safe as a file name).
    store
        ``<project>/stores/<slide_id>.zarr``.
    path
        The slide file or URL, when the slide came from a manifest.
    mpp
        The manifest's level-0 µm/px override, if any.
    labels
        The manifest's label columns for this slide.
    """

    slide_id: str
    store: str
    path: str | None = None
    mpp: float | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Unit:
    """One piece of a slide's work (a band of tiles, a whole slide): one Ray task.

    Attributes
    ----------
    index
        Position among the slide's units.
    n_tiles
        Tiles it covers (progress advances by this much when it finishes).
    data
        What the stage needs to do it (picklable).
    threads
        Threads it may spread its own work over: 1 (a Ray task reserves one
        CPU), or every core when this process runs a spread plan's units one
        after another (see :attr:`Plan.spread`).
    """

    index: int
    n_tiles: int
    data: Any = None
    threads: int = 1


@dataclass(frozen=True)
class Plan:
    """A planned slide: its units and whatever the stage computed to plan them.

    Attributes
    ----------
    slide
        The slide.
    units
        Its work, run in any order (in parallel with the tasks executor).
    state
        Stage-specific planned data (picklable), given back to ``run`` and ``commit``.
    started
        When planning began (the slide's time counts from here).
    spread
        Its units spread their work over :attr:`Unit.threads` threads: run in
        this process, they go one after another with every core each (no core
        idles while the last unit finishes); otherwise units the stage allows
        to run at once (``concurrent_units``) run side by side, one thread each.
    """

    slide: SlideRef
    units: tuple[Unit, ...]
    state: Any = None
    started: float = field(default_factory=time.time)
    spread: bool = False

    @property
    def n_tiles(self) -> int:
        """Tiles of every unit."""
        return sum(u.n_tiles for u in self.units)


@dataclass(frozen=True)
class Placement:
    """Where a worker runs: its device and how many threads its numeric libraries use.

    Given to :meth:`Stage.setup`; ``None`` there means "this process, defaults".
    """

    device: str = "cpu"
    threads: int | None = None


@dataclass(frozen=True)
class ActorPlan:
    """How many actors to start for an actor stage, and what each reserves."""

    count: int
    num_cpus: float
    num_gpus: float = 0.0
    placement: Placement = field(default_factory=Placement)

    def describe(self) -> str:
        """One line for reports: ``2 x GPU actor`` or ``1 x CPU actor (2 threads)``."""
        if self.num_gpus:
            return f"{self.count} x GPU actor"
        return f"{self.count} x CPU actor ({self.placement.threads} threads)"


Progress = Callable[[int], None]


@runtime_checkable
class Stage(Protocol):
    """One per-slide step of the pipeline.

    Class attributes: ``name`` (the registered name, also ``status/<name>/``),
    ``executor`` (``"tasks"``: Ray tasks, one per unit; ``"actors"``: long-lived
    actors each holding what :meth:`setup` built, one slide at a time;
    ``"local"``: this process), ``order`` (where it runs in a pipeline),
    ``needs_slide_files`` (whether ``plan`` reads the slide file itself),
    ``concurrent_units`` (whether one slide's units may run at once on threads of
    one process: they write disjoint parts and their work releases the GIL) and
    ``local_slides`` (up to how many slides with work run in this process rather
    than wait for a new local Ray instance; 0: never; see
    :func:`~slideflow_core.stages.runner.choose_executor`).
    Instances hold their frozen ``config``.
    """

    name: ClassVar[str]
    executor: ClassVar[str]
    order: ClassVar[int]
    needs_slide_files: ClassVar[bool]
    concurrent_units: ClassVar[bool]
    local_slides: ClassVar[int]
    config: Any

    def part(self) -> str:
        """What it writes: a store part (``tiling``, ``features/uni``) or an output name."""
        ...

    def prepare(self, layout: ProjectLayout) -> None:
        """Check, in the driver and before any work, what the stage needs (fail fast)."""
        ...

    def done(self, store: str) -> bool:
        """Whether ``store`` (a path or URL) already holds this stage's complete output."""
        ...

    def settled(self, slide: SlideRef, *, overwrite: bool) -> SlideOutcome | None:
        """The slide's ``skipped`` outcome when it is known done without :meth:`setup`, else None.

        Asked in the driver before any worker starts, so a resumed run whose
        slides are all done builds nothing. ``None`` means "plan it" (the full
        check then happens in :meth:`plan`).
        """
        ...

    def setup(self, placement: Placement | None) -> Any:
        """What every worker holds while it works (a model), or ``None``; built once each."""
        ...

    def actors(self, resources: Mapping[str, float], n_slides: int) -> ActorPlan:
        """The actors to start on a cluster with ``resources`` (actor stages only)."""
        ...

    def describe(self, resource: Any) -> dict[str, Any]:
        """What the workers hold, for the report (model id, dimension...)."""
        ...

    def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan | SlideOutcome:
        """Plan one slide, or return its ``skipped`` outcome when its part is complete.

        Raises for a slide that cannot be done (it then fails alone).
        """
        ...

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Progress) -> Any:
        """Do one unit; ``progress(tiles)`` may report tiles done so far within it."""
        ...

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """Make the slide's output complete from its units' results (in unit order)."""
        ...

    def finish(self, layout: ProjectLayout, report: CohortReport) -> None:
        """Cohort-level outputs after every slide (a predictions table), in the driver."""
        ...


class StageDefaults:
    """Defaults for the optional parts of :class:`Stage`; a stage may inherit them."""

    order: ClassVar[int] = 100
    needs_slide_files: ClassVar[bool] = False
    concurrent_units: ClassVar[bool] = False
    local_slides: ClassVar[int] = 0

    def prepare(self, layout: ProjectLayout) -> None:
        """Nothing to check."""

    def settled(self, slide: SlideRef, *, overwrite: bool) -> SlideOutcome | None:
        """Nothing is known before planning."""
        return None

    def setup(self, placement: Placement | None) -> Any:
        """Nothing to hold."""
        return None

    def actors(self, resources: Mapping[str, float], n_slides: int) -> ActorPlan:
        """One single-CPU actor per CPU, at most one per slide."""
        cpus = max(1, int(resources.get("CPU", 1)))
        return ActorPlan(min(cpus, max(1, n_slides)), num_cpus=1, placement=Placement("cpu", 1))

    def describe(self, resource: Any) -> dict[str, Any]:
        """Nothing to describe."""
        return {}

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """A ``done`` outcome with the tiles of every unit (for stages whose ``run`` commits)."""
        return SlideOutcome(
            plan.slide.slide_id,
            "done",
            store=plan.slide.store,
            n_tiles=plan.n_tiles,
            seconds=time.time() - plan.started,
        )

    def finish(self, layout: ProjectLayout, report: CohortReport) -> None:
        """No cohort-level output."""
