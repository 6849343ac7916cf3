"""Whole-slide segmentation of one slide: plan, bands (resumable), commit of the cell table.

:class:`embedders.dense.stage.SegmentStage` drives these steps: :func:`start_run`
plans a slide, :func:`embedders.dense.bands.segment_band` does each band, and
:func:`commit_cells` writes the table.

The cell table follows :mod:`slideflow_core.geojson.cells` (WKB ``geometry`` in level-0
px, ``class`` when the segmenter has classes, float measurement columns including the
centroid ``x``, ``y``). For a slide store it is ``<id>.cells/<name>/cells.parquet``
beside the store, recorded (with its checksum) by the part ``cells/<name>``, and the
store's ``cells`` entry points at the latest run so
exporters and the viewer find it; for a bare slide it is the ``out`` file with its
provenance in ``<out>.json``. Either way it appears only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
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
)
from embedders.dense.base import Segmenter
from embedders.dense.plan import (
    CELLS,
    CellPlan,
    SegmentationError,
    SegmentConfig,
    plan_cells,
)
from embedders.dense.registry import create_segmenter
from embedders.dense.stitch import resolve_overlaps
from slideflow_core.geojson.cells import CLASS, GEOMETRY, CellTableWriter
from slideflow_core.provenance import package_versions, run_context
from slideflow_core.stages import SlideOutcome
from slideflow_core.store import (
    mark_part,
    part_key,
    part_state,
    read_store_attrs,
    unmark_part,
    write_part,
)


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


def commit_cells(
    plan: CellPlan, segmenter: Segmenter, bands: Sequence[dict[str, Any]], *, started: float
) -> SlideOutcome:
    """Merge the staged bands into the final cell table, atomically.

    ``bands`` are the summaries of the bands segmented by this run (the others
    were staged by an earlier one); ``started`` is when the slide's run began.

    Returns
    -------
    SlideOutcome
        ``done``, with ``details``: ``n_cells``, ``table`` (the Parquet file),
        ``bands``, ``bands_resumed`` and ``mpp``.

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
        "config": plan.config.to_dict(),
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
        output = Path(plan.output)
        table = Path(os.path.relpath(output, plan.store)).as_posix()  # ../<id>.cells/<run>/...
        pointer = _pointer(plan.store)
        if pointer.get("table") == table:
            unmark_part(plan.store, CELLS)  # the table it points at is being replaced
        with write_part(plan.store, part, {**info, "table": table}, files=(table,)) as group:
            tmp = output.with_name(output.name + ".partial")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            n = _write_table(plan, segmenter, tmp)
            os.replace(tmp, output)  # the part is unmarked until the block commits it
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
    return SlideOutcome(
        plan.slide_id,
        "done",
        store=plan.store or plan.output,
        n_tiles=len(plan.cores),
        seconds=time.time() - started,
        details={
            "n_cells": n,
            "table": plan.output,
            "bands": len(plan.bands),
            "bands_resumed": len(plan.bands) - sum(not b.get("skipped") for b in bands),
            "mpp": plan.mpp,
        },
    )


def _pointer(store: str) -> dict[str, Any]:
    return read_store_attrs(store).get("parts", {}).get(CELLS) or {}


def start_run(
    source: str | os.PathLike[str],
    segmenter: Segmenter,
    config: SegmentConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    slide_mpp: float | None = None,
    overwrite: bool = False,
) -> CellPlan | SlideOutcome:
    """Plan a slide and ready its band folder, or its ``skipped`` outcome when it is done.

    Raises
    ------
    SegmentationError
        When a table made differently exists and ``overwrite`` is False.
    """
    plan = plan_cells(source, segmenter, config, out=out, slide_mpp=slide_mpp)
    state = existing_state(plan)
    if state == "complete" and not overwrite:
        return SlideOutcome(
            plan.slide_id,
            "skipped",
            store=plan.store or plan.output,
            n_tiles=len(plan.cores),
            details={"table": plan.output},
        )
    if state == "incompatible" and not overwrite:
        raise SegmentationError(
            f"{plan.output} was segmented differently (another segmenter, its settings, "
            "the grid or the tiling)",
            hint="pass overwrite=True (--overwrite) to replace it, or name= (--name) to keep both",
        )
    prepare_stage(plan)
    return plan


def build_segmenter(config: SegmentConfig) -> Segmenter:
    """The segmenter ``config`` names, with its weights, resolution and options.

    Raises
    ------
    RegistryError
        If the name is unknown or the segmenter is unavailable here.
    SegmentationError
        If it does not take one of the options given.
    """
    options = dict(config.segmenter_options)
    if config.weights is not None:
        options["weights"] = config.weights
    if config.target_mpp is not None:
        options["mpp"] = config.target_mpp
    try:
        return create_segmenter(config.segmenter, **options)
    except TypeError as exc:
        raise SegmentationError(
            f"segmenter {config.segmenter!r} does not take {sorted(options)}: {exc}",
            hint="see list_segmenters() (sfc segment --list): classical takes no weights",
        ) from exc
