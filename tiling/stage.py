"""The tiling stage: tissue, grid and tiles with QC into ``stores/<slide_id>.zarr``.

Planning (tissue detection, the grid, the empty partial store) is one Ray task
per slide; a slide with more than ``band_tiles`` tiles is cut into shard-aligned
bands, which run in that task while many slides wait and on different workers for
the last slides of a cohort; the commit records provenance and renames the store
into place. :func:`tile_cohort` is the stage through the core runner;
:func:`tile_slide` is one slide through the same runner, in this process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.slides import slide_id_from_path
from slideflow_core.stages import (
    CohortReport,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    Unit,
    run_cohort,
    run_plan,
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
from tiling.pixels import REENCODED_CODECS
from tiling.store import PART


class TileStage(StageDefaults):
    """Tissue detection, tiles and QC into per-slide stores (part ``tiling``)."""

    name: ClassVar[str] = "tile"
    executor: ClassVar[str] = "tasks"
    order: ClassVar[int] = 10
    needs_slide_files: ClassVar[bool] = True
    #: Bands write disjoint shards; file reads, JPEG and Zarr I/O release the GIL.
    concurrent_units: ClassVar[bool] = True
    #: One slide tiles here, its bands on every core (see band_plan), without waiting for Ray.
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
        return band_plan(slide, plan_slide(task, resource))

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> dict[str, Any]:
        """Read, QC and write one band of tiles (on ``unit.threads`` threads)."""
        state: SlidePlan = plan.state
        return tile_band(state, *unit.data, threads=unit.threads)

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """Record provenance and commit the store."""
        return commit_slide(plan.state, list(results))


def band_plan(slide: SlideRef, planned: SlidePlan) -> Plan:
    """A planned slide as the runner's :class:`~slideflow_core.stages.Plan`: one unit per band.

    Bands whose tiles are decoded and re-encoded spread over every core in
    this process (one band after another), where decoding balances block by
    block; bands of passed-through or lossless tiles run side by side instead,
    one thread each, so one band's writes overlap another's reads.
    """
    units = tuple(
        Unit(i, stop - start, (start, stop)) for i, (start, stop) in enumerate(planned.bands)
    )
    spread = planned.pixels.codec in REENCODED_CODECS
    return Plan(slide, units, state=planned, started=planned.started, spread=spread)


def tile_slide(
    slide: str | Path,
    store: str | Path,
    config: TilingConfig | None = None,
    *,
    mpp: float | None = None,
    slide_id: str | None = None,
    backend: str = "auto",
    overwrite: bool = False,
) -> SlideOutcome:
    """Tile one slide into ``store`` in this process, through the same runner as a cohort.

    Parameters
    ----------
    slide
        Slide file.
    store
        Final store path (``.zarr``); built under a temporary name and renamed.
    config
        Tiling configuration (default :class:`TilingConfig()`: 256 px at 0.5 µm/px).
    mpp
        Level-0 µm/px override for uncalibrated slides.
    slide_id
        Identity recorded in the store (default: file name without extension).
    backend
        Slide reader.
    overwrite
        Re-tile even when a store made with another config exists.

    Returns
    -------
    SlideOutcome
        ``done`` or ``skipped``; errors raise (use :func:`tiling.tile_cohort` to
        collect per-slide failures instead).
    """
    task = SlideTask(
        slide_id=slide_id or slide_id_from_path(slide),
        path=str(slide),
        store=str(store),
        config=config or TilingConfig(),
        mpp=mpp,
        backend=backend,
    )
    existing = check_existing(task, overwrite=overwrite)
    if existing is not None:
        return existing
    slide_ref = SlideRef(task.slide_id, task.store, task.path, task.mpp)
    return run_plan(TileStage(task.config), band_plan(slide_ref, plan_slide(task)), None, None)


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
