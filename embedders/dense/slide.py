"""Whole-slide segmentation of one slide: plan, bands (resumable), commit of the cell table.

The cell table follows :mod:`slideflow_core.geojson.cells` (WKB ``geometry`` in level-0
px, ``class`` when the segmenter has classes, float measurement columns including the
centroid ``x``, ``y``). For a slide store it is the part ``cells/<name>`` holding
``cells.parquet``, and the store's ``cells`` entry points at the latest run so
exporters and the viewer find it; for a bare slide it is the ``out`` file with its
provenance in ``<out>.json``. Either way it appears only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import shapely

from embedders.dense.bands import (
    BORDER,
    BOTTOM,
    IN_CORE,
    TOP,
    measurement_names,
    prepare_stage,
    segment_band,
)
from embedders.dense.base import Segmenter
from embedders.dense.plan import (
    CELLS,
    TABLE_NAME,
    CellPlan,
    SegmentationError,
    SegmentConfig,
    plan_cells,
)
from embedders.dense.registry import create_segmenter
from embedders.dense.stitch import resolve_overlaps
from slideflow_core.geojson.cells import CLASS, GEOMETRY, CellTableWriter
from slideflow_core.provenance import package_versions, run_context
from slideflow_core.store import (
    mark_part,
    part_key,
    part_state,
    read_store_attrs,
    unmark_part,
    write_part,
)


@dataclass(frozen=True)
class SegmentResult:
    """Outcome of segmenting one slide (one row of a cohort report)."""

    slide_id: str
    status: str  # "done", "skipped" or "failed"
    output: str
    n_cells: int = 0
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


def cells_part(name: str) -> str:
    """The store part holding the cells of run ``name`` (``cells/<name>``)."""
    return part_key(CELLS, name)


def _sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def existing_state(plan: CellPlan) -> str:
    """``"complete"``, ``"incompatible"`` or ``"missing"`` for the plan's output."""
    if plan.store is not None:
        return part_state(plan.store, cells_part(plan.name), plan.identity)
    output = Path(plan.output)
    sidecar = _sidecar(output)
    if not (output.is_file() and sidecar.is_file()):
        return "missing"
    recorded = json.loads(sidecar.read_text()).get("identity")
    return "complete" if recorded == json.loads(json.dumps(plan.identity)) else "incompatible"


def _cross_band_drops(plan: CellPlan) -> dict[int, np.ndarray]:
    """Rows to drop from each band file: duplicates of cells found by the band above."""
    drops: dict[int, list[int]] = {}
    for upper in range(len(plan.bands) - 1):
        lower = upper + 1
        if plan.bands[upper][1] != plan.bands[lower][0]:
            continue  # not neighbours: their windows do not overlap
        parts = []
        for band, flag in ((upper, BOTTOM), (lower, TOP)):
            table = pq.read_table(plan.band_file(band), columns=[GEOMETRY, IN_CORE, BORDER])
            rows = np.flatnonzero(table[BORDER].to_numpy() & flag)
            geometry = table[GEOMETRY].to_numpy(zero_copy_only=False)[rows]
            parts.append((band, rows, shapely.from_wkb(geometry), table[IN_CORE].to_numpy()[rows]))
        polygons = np.concatenate([p[2] for p in parts])
        keep = resolve_overlaps(
            polygons, np.concatenate([p[3] for p in parts]), min_overlap=plan.config.min_overlap
        )
        split = len(parts[0][1])
        for (band, rows, _, _), kept in zip(parts, (keep[:split], keep[split:]), strict=True):
            drops.setdefault(band, []).extend(rows[~kept].tolist())
    return {band: np.asarray(rows, np.int64) for band, rows in drops.items()}


def _write_table(plan: CellPlan, segmenter: Segmenter, path: Path) -> int:
    """Stream the staged bands, less cross-band duplicates, into the cell table at ``path``."""
    names = measurement_names(segmenter)
    drops = _cross_band_drops(plan)
    total = 0
    with CellTableWriter(path, measurements=names, with_classes=bool(segmenter.classes)) as writer:
        for band in range(len(plan.bands)):
            table = pq.read_table(plan.band_file(band))
            keep = np.ones(table.num_rows, bool)
            keep[drops.get(band, np.empty(0, np.int64))] = False
            if not keep.any():
                continue
            table = table.filter(keep)
            writer.write(
                shapely.from_wkb(table[GEOMETRY].to_numpy(zero_copy_only=False)),
                classes=table[CLASS].to_pylist() if CLASS in table.column_names else None,
                measurements={n: table[n].to_numpy() for n in names},
            )
            total += table.num_rows
    return total


def commit_cells(plan: CellPlan, segmenter: Segmenter, bands: list[dict[str, Any]]) -> int:
    """Merge the staged bands into the final cell table, atomically; returns the cell count.

    Raises
    ------
    SegmentationError
        If a band has not been staged.
    """
    missing = [b for b in range(len(plan.bands)) if not plan.band_file(b).is_file()]
    if missing:
        raise SegmentationError(
            f"{plan.slide_id}: {len(missing)} of {len(plan.bands)} bands are not segmented",
            hint="rerun the segmentation; finished bands are kept",
        )
    info = {
        "identity": plan.identity,
        "segmenter": segmenter.identity(),
        "name": plan.name,
        "mpp": plan.mpp,
        "level": plan.level,
        "config": asdict(plan.config),
        "n_tiles": len(plan.cores),
        "n_bands": len(plan.bands),
        "band_seconds": round(sum(b.get("seconds", 0.0) for b in bands), 3),
        "coordinate_space": "level0_px",
        "measurements": list(measurement_names(segmenter)),
        "classes": list(segmenter.classes),
        "versions": package_versions(("opencv-python-headless", "scikit-image", "shapely")),
        **run_context(),
    }
    if plan.store is not None:
        part = cells_part(plan.name)
        table = f"{part}/{TABLE_NAME}"
        pointer = _pointer(plan.store)
        if pointer.get("table") == table:
            unmark_part(plan.store, CELLS)  # the table it points at is being replaced
        with write_part(plan.store, part, {**info, "table": table}) as group:
            n = _write_table(plan, segmenter, Path(group.store.root) / TABLE_NAME)
            group.attrs.update({**info, "n_cells": n})
        mark_part(plan.store, part, {**info, "table": table, "n_cells": n})
        mark_part(plan.store, CELLS, {**info, "table": table, "n_cells": n})
    else:
        output = Path(plan.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".partial")
        n = _write_table(plan, segmenter, tmp)
        os.replace(tmp, output)
        sidecar = _sidecar(output)
        record = {**info, "n_cells": n, "slide": plan.slide_path, "table": output.name}
        sidecar.with_name(sidecar.name + ".tmp").write_text(json.dumps(record, indent=1))
        os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
    shutil.rmtree(plan.stage, ignore_errors=True)
    return n


def _pointer(store: str) -> dict[str, Any]:
    return read_store_attrs(store).get("parts", {}).get(CELLS) or {}


def start_run(
    source: str | os.PathLike[str],
    segmenter: Segmenter,
    config: SegmentConfig,
    *,
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
    overwrite: bool = False,
) -> CellPlan | SegmentResult:
    """Plan a slide and ready its band folder, or a ``skipped`` result when it is done.

    Raises
    ------
    SegmentationError
        When a table made differently exists and ``overwrite`` is False.
    """
    plan = plan_cells(source, segmenter, config, name=name, out=out, mpp=mpp)
    state = existing_state(plan)
    if state == "complete" and not overwrite:
        return SegmentResult(plan.slide_id, "skipped", plan.output, n_tiles=len(plan.cores))
    if state == "incompatible" and not overwrite:
        raise SegmentationError(
            f"{plan.output} was segmented differently (another segmenter, its settings, "
            "the grid or the tiling)",
            hint="pass overwrite=True (--overwrite) to replace it, or name= (--name) to keep both",
        )
    prepare_stage(plan)
    return plan


def resolve_segmenter(segmenter: Segmenter | str) -> Segmenter:
    """A segmenter object from itself or a registered name."""
    return create_segmenter(segmenter) if isinstance(segmenter, str) else segmenter


def segment_slide(
    source: str | os.PathLike[str],
    segmenter: Segmenter | str = "classical",
    *,
    config: SegmentConfig | None = None,
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
    overwrite: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **config_kwargs: Any,
) -> SegmentResult:
    """Segment every nucleus of one slide into a cell table, in this process.

    Parameters
    ----------
    source
        A slide store (``<project>/stores/<slide_id>.zarr``; cores follow its kept tiles)
        or a slide file (tissue is detected; ``out`` is then required).
    segmenter
        A :class:`~embedders.dense.base.Segmenter` or a registered name.
    config
        Window grid (:class:`SegmentConfig`); or give its fields as keyword arguments.
    name
        Run name: the part ``cells/<name>`` (default: the segmenter's name).
    out
        Cell table to write for a bare slide (``.parquet``).
    mpp
        Level-0 µm/px override for an uncalibrated bare slide.
    overwrite
        Redo a slide whose table is complete, or was made differently.
    progress
        Called with each band's summary (``band``, ``tiles``, ``cells``, ``seconds``).

    Returns
    -------
    SegmentResult
        ``done`` or ``skipped``.

    Raises
    ------
    SegmentationError
        On bad input, or when a table made differently exists and ``overwrite`` is False.
    """
    started = time.time()
    if config is not None and config_kwargs:
        raise TypeError("give either config= or its fields as keyword arguments, not both")
    segmenter = resolve_segmenter(segmenter)
    plan = start_run(
        source,
        segmenter,
        config or SegmentConfig(**config_kwargs),
        name=name,
        out=out,
        mpp=mpp,
        overwrite=overwrite,
    )
    if isinstance(plan, SegmentResult):
        return plan
    resumed = sum(plan.band_file(b).is_file() for b in range(len(plan.bands)))
    bands = []
    for band in range(len(plan.bands)):
        summary = segment_band(plan, segmenter, band)
        bands.append(summary)
        if progress is not None:
            progress(summary)
    n = commit_cells(plan, segmenter, bands)
    seconds = time.time() - started
    return SegmentResult(
        plan.slide_id,
        "done",
        plan.output,
        n_cells=n,
        n_tiles=len(plan.cores),
        seconds=seconds,
        details={"bands": len(plan.bands), "bands_resumed": resumed, "mpp": plan.mpp},
    )
