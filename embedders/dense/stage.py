"""The cells stage: nuclei of each slide store into its ``cells/<name>`` table, on Ray tasks.

The segmenter is built once in the driver and shared with the tasks. Planning a
slide (its window grid, its bands) is one task; each band not yet staged by an
earlier run is another, so a slide spreads over the cluster and a rerun resumes
band by band; the commit merges the bands into the table atomically.
:func:`segment_cohort` is the stage through the core runner; :func:`segment_slide`
is one slide store or slide file in this process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from embedders.dense.bands import segment_band
from embedders.dense.base import Segmenter
from embedders.dense.plan import CellPlan, SegmentConfig, table_name
from embedders.dense.slide import build_segmenter, cells_part, commit_cells, start_run
from slideflow_core.slides import slide_id_from_path
from slideflow_core.stages import (
    CohortReport,
    Placement,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    Unit,
    config_from,
    run_cohort,
    run_slide,
)
from slideflow_core.stages.runner import CohortLike
from slideflow_core.store import part_complete


class SegmentStage(StageDefaults):
    """Nuclei into per-slide cell tables (``cells/<name>``), one Ray task per band of tiles."""

    name: ClassVar[str] = "segment"
    executor: ClassVar[str] = "tasks"
    order: ClassVar[int] = 30
    Config = SegmentConfig

    def __init__(self, config: SegmentConfig | None = None) -> None:
        self.config = config or SegmentConfig()

    def part(self) -> str:
        """``cells/<name>``: the run name, or the segmenter's name made safe."""
        return cells_part(table_name(self.config.segmenter, self.config.name))

    def done(self, store: str) -> bool:
        """A complete cell table of this name (its identity is checked when re-segmenting)."""
        return part_complete(store, self.part())

    def setup(self, placement: Placement | None) -> Segmenter:
        """Build the segmenter (in the driver; the tasks share it)."""
        return build_segmenter(self.config)

    def describe(self, resource: Segmenter) -> dict[str, Any]:
        """The segmenter: its identity and resolution."""
        return {"segmenter": resource.identity(), "mpp": resource.mpp}

    def plan(self, slide: SlideRef, resource: Segmenter, *, overwrite: bool) -> Plan | SlideOutcome:
        """Skip a table made the same way; else one unit per band not staged yet.

        A slide whose bands were all staged by an earlier run is committed here.
        A ``SlideRef`` with a ``path`` is a bare slide file whose table goes to
        ``slide.store`` (:func:`segment_slide`).
        """
        started = time.time()
        if slide.path is None:
            cells = start_run(slide.store, resource, self.config, overwrite=overwrite)
        else:
            cells = start_run(
                slide.path,
                resource,
                self.config,
                out=slide.store or None,
                slide_mpp=slide.mpp,
                overwrite=overwrite,
            )
        if isinstance(cells, SlideOutcome):
            return cells
        todo = [b for b in range(len(cells.bands)) if not cells.band_file(b).is_file()]
        if not todo:
            return commit_cells(cells, resource, [], started=started)
        units = tuple(Unit(i, len(cells.band_cores(b)), b) for i, b in enumerate(todo))
        return Plan(slide, units, state=cells, started=started)

    def run(self, plan: Plan, unit: Unit, resource: Segmenter, progress: Any) -> dict[str, Any]:
        """Segment one band and stage its cells."""
        state: CellPlan = plan.state
        return segment_band(state, resource, unit.data)

    def commit(self, plan: Plan, results: Sequence[Any], resource: Segmenter) -> SlideOutcome:
        """Merge the bands into the slide's cell table (``details["n_cells"]``)."""
        return commit_cells(plan.state, resource, list(results), started=plan.started)


def segment_cohort(
    project: str | os.PathLike[str],
    segmenter_or_config: str | SegmentConfig = "classical",
    *,
    cohort: CohortLike = None,
    overwrite: bool = False,
    executor: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    max_in_flight: int | None = None,
    **options: Any,
) -> CohortReport:
    """Segment every slide store of a project into its ``cells/<name>`` part, on Ray.

    Parameters
    ----------
    project
        Project directory holding ``stores/<slide_id>.zarr`` (from ``tiling.tile_cohort``).
    segmenter_or_config
        A :class:`SegmentConfig`, or a registered segmenter name with the other
        fields as keyword arguments (``weights=``, ``target_mpp=``, ``tile_px=``...).
    cohort
        Only these slides: a cohort, a manifest path or slide ids (default: every store).
    overwrite
        Redo slides whose table is complete or was made differently.
    executor
        ``"tasks"`` (Ray, the default) or ``"local"`` (this process).
    address, num_cpus
        Ray cluster address (``None``: local Ray) and cores of a local instance.
    progress
        Show a progress bar over tiles.
    max_in_flight
        Ray tasks submitted at once (default: twice the cluster's CPUs).

    Returns
    -------
    CohortReport
        Per-slide outcomes (``details["n_cells"]``); also written to
        ``<project>/status/segment.json`` and ``<project>/status/segment/<slide_id>.json``.
    """
    config = config_from(SegmentConfig, segmenter_or_config, options, field="segmenter")
    return run_cohort(
        SegmentStage(config),
        project,
        cohort,
        overwrite=overwrite,
        executor=executor,
        address=address,
        num_cpus=num_cpus,
        progress=progress,
        max_in_flight=max_in_flight,
    )


def segment_slide(
    source: str | os.PathLike[str],
    segmenter: Segmenter | str | None = None,
    *,
    config: SegmentConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    slide_mpp: float | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> SlideOutcome:
    """Segment every nucleus of one slide into a cell table, in this process.

    Parameters
    ----------
    source
        A slide store (``<project>/stores/<slide_id>.zarr``; cores follow its kept tiles)
        or a slide file (tissue is detected; ``out`` is then required).
    segmenter
        A :class:`~embedders.dense.base.Segmenter`, or a registered name (default:
        ``config.segmenter``).
    config
        :class:`SegmentConfig`; or give its fields as keyword arguments
        (``name=``, ``tile_px=``, ``target_mpp=``...).
    out
        Cell table to write for a bare slide (``.parquet``).
    slide_mpp
        Level-0 µm/px calibration of an uncalibrated bare slide.
    overwrite
        Redo a slide whose table is complete, or was made differently.
    progress
        Called with the number of tiles done after each band.

    Returns
    -------
    SlideOutcome
        ``done`` or ``skipped``; ``details``: ``n_cells``, ``table`` (the Parquet
        file), ``bands``, ``bands_resumed``, ``mpp``.

    Raises
    ------
    SegmentationError
        On bad input, or when a table made differently exists and ``overwrite`` is False.
    """
    if config is not None and options:
        raise TypeError("give either config= or its fields as keyword arguments, not both")
    config = config or SegmentConfig(**options)
    if segmenter is not None:
        name = segmenter if isinstance(segmenter, str) else segmenter.name
        config = replace(config, segmenter=name)
    stage = SegmentStage(config)
    resource = stage.setup(None) if segmenter is None or isinstance(segmenter, str) else segmenter
    slide_id = slide_id_from_path(source)
    if out is None:
        slide = SlideRef(slide_id, os.fspath(source))
    else:
        slide = SlideRef(slide_id, os.fspath(out), path=os.fspath(source), mpp=slide_mpp)
    return run_slide(stage, slide, resource, overwrite=overwrite, progress=progress)
