"""The tiling stage: tissue, grid and tiles with QC into ``stores/<slide_id>.zarr``.

Planning (tissue detection, the grid, the empty partial store) is one Ray task
per slide; a slide with more than ``band_tiles`` tiles is cut into shard-aligned
bands that run on different workers; the commit records provenance and renames
the store into place. :func:`tile_cohort` is the stage through the core runner.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.stages import (
    CohortReport,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    Unit,
    run_cohort,
)
from slideflow_core.store import part_state
from tiling.config import TilingConfig
from tiling.job import (
    RunInputs,
    SlidePlan,
    SlideTask,
    check_existing,
    commit_slide,
    plan_slide,
    tile_band,
)
from tiling.store import PART


class TileStage(StageDefaults):
    """Tissue detection, tiles and QC into per-slide stores (part ``tiling``)."""

    name: ClassVar[str] = "tile"
    executor: ClassVar[str] = "tasks"
    order: ClassVar[int] = 10
    needs_slide_files: ClassVar[bool] = True
    #: Bands write disjoint shards; file reads, JPEG and Zarr I/O release the GIL.
    concurrent_units: ClassVar[bool] = True
    #: One slide tiles here, its bands on one thread per core, without waiting for Ray.
    local_slides: ClassVar[int] = 1
    Config = TilingConfig

    def __init__(self, config: TilingConfig | None = None) -> None:
        self.config = config or TilingConfig()

    def part(self) -> str:
        """The tiling part."""
        return PART

    def setup(self, placement: Any) -> RunInputs:
        """Parse the run's ROI once; every slide's plan gets the parsed shapes."""
        return RunInputs.load(self.config)

    def done(self, store: str) -> bool:
        """A complete tiling part made with this configuration."""
        return part_state(store, PART, self.config.identity()) == "complete"

    def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan | SlideOutcome:
        """Skip a complete store, else detect tissue, lay the grid and create the partial store."""
        task = SlideTask(slide.slide_id, str(slide.path), slide.store, self.config, mpp=slide.mpp)
        existing = check_existing(task, overwrite=overwrite)
        if existing is not None:
            return existing
        planned = plan_slide(task, resource)
        units = tuple(
            Unit(i, stop - start, (start, stop)) for i, (start, stop) in enumerate(planned.bands)
        )
        return Plan(slide, units, state=planned, started=planned.started)

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> dict[str, Any]:
        """Read, QC and write one band of tiles."""
        state: SlidePlan = plan.state
        return tile_band(state, *unit.data)

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """Record provenance and commit the store."""
        return commit_slide(plan.state, list(results))


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
    executor: str | None = None,
    **config_kwargs: Any,
) -> CohortReport:
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
    executor
        ``"tasks"`` (Ray, the default) or ``"local"`` (this process).

    Returns
    -------
    CohortReport
        Per-slide outcomes (``details["n_kept"]``: tiles passing QC); also written
        to ``<out>/status/tile/<slide_id>.json`` and ``<out>/status/tile.csv``.
    """
    if config is not None and config_kwargs:
        raise TypeError("give either config= or its fields as keyword arguments, not both")
    if not isinstance(cohort, Cohort):
        cohort = Cohort.from_manifest(cohort)
    return run_cohort(
        TileStage(config or TilingConfig(**config_kwargs)),
        ProjectLayout(out).root,
        cohort,
        overwrite=overwrite,
        executor=executor,
        address=address,
        num_cpus=num_cpus,
        progress=progress,
        max_in_flight=max_in_flight,
    )
