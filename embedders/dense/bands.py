"""One band of a whole-slide segmentation: read windows, segment, measure, de-duplicate.

A band's cells are written to one staged Parquet file (temporary name, then an atomic
rename), so a rerun skips finished bands. Besides the cell columns the file holds
``_in_core`` (centroid in the core of the tile that found it) and ``_border`` (bit 1:
near the band's top edge, bit 2: near its bottom edge), which the commit step uses to
settle duplicates between neighbouring bands without loading whole bands.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from embedders.dense.base import Segmenter
from embedders.dense.measure import MEASUREMENTS, Cells, WindowFrame, measure_window
from embedders.dense.measure import probability_column as _prob
from embedders.dense.plan import CellPlan
from embedders.dense.stitch import resolve_overlaps
from slideflow_core.geojson.cells import CLASS, GEOMETRY
from tiling.reader import TileReader

IN_CORE = "_in_core"
BORDER = "_border"
TOP, BOTTOM = 1, 2
STAGE_FILE = "stage.json"


def measurement_names(segmenter: Segmenter) -> tuple[str, ...]:
    """Measurement columns a segmenter's cell table has, in order."""
    return MEASUREMENTS + tuple(_prob(c) for c in segmenter.classes)


def prepare_stage(plan: CellPlan) -> int:
    """Make the band folder ready; keep finished bands only if made with the same identity.

    Returns the number of finished bands kept.
    """
    stage = Path(plan.stage)
    record = stage / STAGE_FILE
    wanted = json.loads(json.dumps(plan.identity))
    if record.is_file() and json.loads(record.read_text()) == wanted:
        return sum(plan.band_file(b).is_file() for b in range(len(plan.bands)))
    if stage.exists():
        for path in stage.iterdir():
            path.unlink()
    stage.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(record.name + ".tmp")
    tmp.write_text(json.dumps(wanted))
    os.replace(tmp, record)
    return 0


def _window_frames(
    plan: CellPlan, cores: np.ndarray, downsample: float
) -> tuple[np.ndarray, list[WindowFrame]]:
    """Level-0 read positions of the cores' windows, and where each window's pixels lie."""
    config, scale, step0 = plan.config, plan.scale, plan.step0
    width0, height0 = plan.size0
    span0 = config.window_px * scale
    frames, reads = [], []
    for col, row in cores.tolist():
        wanted = (col * step0 - config.overlap_px * scale, row * step0 - config.overlap_px * scale)
        read = (round(wanted[0]), round(wanted[1]))
        reads.append(read)
        # The reader starts at the level pixel at or left of / above the requested point.
        ox, oy = (float(np.floor(v / downsample) * downsample) for v in read)
        core = (
            (col * step0 - ox) / scale,
            (row * step0 - oy) / scale,
            ((col + 1) * step0 - ox) / scale,
            ((row + 1) * step0 - oy) / scale,
        )
        open_edges = (ox > 0, oy > 0, ox + span0 < width0, oy + span0 < height0)
        frames.append(WindowFrame((ox, oy), scale, plan.mpp, core, open_edges))
    return np.array(reads, np.int64).reshape(-1, 2), frames


def _border_flags(plan: CellPlan, band: int, polygons: np.ndarray) -> np.ndarray:
    """Bit flags of outlines lying within one overlap of the band's top or bottom edge."""
    start, stop = plan.bands[band]
    reach = plan.config.overlap_px * plan.scale
    bounds = shapely.bounds(polygons).reshape(-1, 4)
    top, bottom = start * plan.step0, stop * plan.step0
    flags = np.zeros(len(polygons), np.int8)
    flags[bounds[:, 1] < top + reach] |= TOP
    flags[bounds[:, 3] > bottom - reach] |= BOTTOM
    return flags


def band_table(cells: Cells, names: tuple[str, ...], flags: np.ndarray) -> pa.Table:
    """A band's cells as an Arrow table (cell columns plus the staging columns)."""
    columns: dict[str, Any] = {GEOMETRY: pa.array(shapely.to_wkb(cells.polygons), pa.binary())}
    if cells.classes is not None:
        columns[CLASS] = pa.array(cells.classes.tolist(), pa.string())
    for name in names:
        columns[name] = pa.array(cells.columns[name], pa.float64())
    columns[IN_CORE] = pa.array(cells.in_core, pa.bool_())
    columns[BORDER] = pa.array(flags, pa.int8())
    return pa.table(columns)


def segment_band(plan: CellPlan, segmenter: Segmenter, band: int) -> dict[str, Any]:
    """Segment every core of band ``band`` and stage its cells (skipped when already staged).

    Returns
    -------
    dict
        ``band``, ``tiles``, ``cells``, ``seconds`` and ``skipped``.
    """
    target = plan.band_file(band)
    cores = plan.band_cores(band)
    if target.is_file():
        return {"band": band, "tiles": len(cores), "cells": -1, "seconds": 0.0, "skipped": True}
    started = time.perf_counter()
    names = measurement_names(segmenter)
    parts: list[Cells] = []
    with plan.open() as slide:
        downsample = slide.level_downsamples[plan.level]
        origins, frames = _window_frames(plan, cores, downsample)
        with TileReader(
            slide, level=plan.level, read_px=plan.read_px, tile_px=plan.config.window_px
        ) as reader:
            for indices, windows in reader.read(origins):
                for index, window in zip(indices.tolist(), windows, strict=True):
                    found = segmenter.segment(window)
                    parts.append(measure_window(found, window, frames[index]))
    cells = Cells.concat(parts, names, bool(segmenter.classes))
    keep = resolve_overlaps(cells.polygons, cells.in_core, min_overlap=plan.config.min_overlap)
    cells = cells.take(keep)
    table = band_table(cells, names, _border_flags(plan, band, cells.polygons))
    tmp = target.with_name(target.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    seconds = time.perf_counter() - started
    return {
        "band": band,
        "tiles": len(cores),
        "cells": len(cells),
        "seconds": seconds,
        "skipped": False,
    }
