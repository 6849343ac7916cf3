"""What a slide store holds that can be drawn: tissue, tiles with measurements, cells.

Read with plain ``zarr`` and the core's store modules, so exporters and the
viewer need no stage installed. Every coordinate here is level-0 pixels in the
slide's full frame (``coordinate_space = "level0_px"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from slideflow_core.features import list_parts, read_attention
from slideflow_core.geojson.cells import CellTable, store_cell_table
from slideflow_core.geojson.objects import Classification
from slideflow_core.store import StoreError, read_store_attrs, use_fast_codecs

#: Name of the tiling stage's part in a store (part of the store layout).
TILING_PART = "tiling"


@dataclass(frozen=True)
class RunScores:
    """Per-tile scores of one MIL run, aligned with the tiling part's rows.

    Attributes
    ----------
    run
        Run name (``attention/<run>``).
    columns
        Measurement name of each score column: ``<kind>`` for one column,
        ``<kind>: <class>`` for several, where ``kind`` is the run's recorded
        ``score_kind`` (default ``attention``) and the classes its ``class_names``
        (or ``columns``, as :mod:`mil` records them).
    values
        ``(n_tiles, K)`` float32, NaN for tiles the run did not score.
    classes
        Class names when the run's scores are class probabilities
        (``score_kind == "probability"``): tiles are then classified by their
        most probable class.
    """

    run: str
    columns: tuple[str, ...]
    values: np.ndarray
    classes: tuple[str, ...] | None = None

    def measurements(self, rows: slice) -> dict[str, np.ndarray]:
        """Name → values for tile rows ``rows``."""
        return {name: self.values[rows, k] for k, name in enumerate(self.columns)}

    def classifications(
        self, rows: slice, colors: dict[str, Any] | None = None
    ) -> list[Classification | None] | None:
        """Most probable class of each tile in ``rows`` (None when not probabilities)."""
        if self.classes is None:
            return None
        block = self.values[rows]
        scored = np.isfinite(block).all(axis=1)
        best = np.argmax(np.where(np.isfinite(block), block, -np.inf), axis=1)
        named = [Classification.named(c, colors) for c in self.classes]
        return [
            named[b] if ok else None for b, ok in zip(best.tolist(), scored.tolist(), strict=True)
        ]


class StoreOverlays:
    """The drawable content of one committed slide store.

    Parameters
    ----------
    path
        A ``<slide_id>.zarr`` store.

    Raises
    ------
    StoreError
        If there is no committed slideflow-core store at ``path``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        use_fast_codecs()
        self.path = Path(path)
        self.attrs = read_store_attrs(self.path)
        self._scores: dict[str, RunScores] = {}

    @property
    def slide_id(self) -> str:
        """Slide identity."""
        return str(self.attrs.get("slide_id", self.path.stem))

    @property
    def slide(self) -> dict[str, Any]:
        """The source slide's recorded description (path, dimensions, levels, bounds, …)."""
        return dict(self.attrs.get("slide", {}))

    @property
    def bounds(self) -> list[int] | None:
        """OpenSlide bounds ``[x, y, w, h]`` of the slide, when it has them."""
        return self.slide.get("bounds")

    @property
    def tissue(self) -> list[BaseGeometry]:
        """Tissue regions (one polygon each, holes kept) from the tiling part's outline."""
        outline = self.attrs.get("tissue", {}).get("outline")
        if not outline:
            return []
        geometry = shape(outline)
        return [g for g in getattr(geometry, "geoms", [geometry]) if not g.is_empty]

    @property
    def tiling(self) -> dict[str, Any] | None:
        """The tiling part's record, or None when the store has no complete one."""
        info = self.attrs.get("parts", {}).get(TILING_PART)
        return info if info and info.get("complete") else None

    @property
    def roi_path(self) -> Path | None:
        """The GeoJSON ROI the slide was tiled with, when it still exists."""
        roi = ((self.tiling or {}).get("config") or {}).get("roi")
        return Path(roi) if roi and Path(roi).is_file() else None

    @property
    def tile_extent_px(self) -> float:
        """Tile side in level-0 pixels (read size × the read level's downsample)."""
        info = self._require_tiling()
        downsamples = self.slide.get("level_downsamples") or [1.0]
        return float(info["read_px"]) * float(downsamples[int(info["level"])])

    def _require_tiling(self) -> dict[str, Any]:
        info = self.tiling
        if info is None:
            raise StoreError(
                f"{self.path} has no complete tiling part", hint="tile the slide first"
            )
        return info

    @cached_property
    def coords(self) -> np.ndarray:
        """``(n, 2)`` int64 level-0 top-left of every tile."""
        self._require_tiling()
        return np.asarray(zarr.open_array(str(self.path / "coords"), mode="r")[:], np.int64)

    @cached_property
    def qc(self) -> dict[str, np.ndarray]:
        """QC columns of every tile (``keep`` as 0/1)."""
        self._require_tiling()
        if not (self.path / "qc").is_dir():
            return {}
        group = zarr.open_group(str(self.path / "qc"), mode="r")
        return {
            name: np.asarray(group[name][:]).astype(np.float32)
            for name in sorted(group.array_keys())
        }

    def runs(self) -> dict[str, dict[str, Any]]:
        """Complete ``attention/<run>`` parts by run name."""
        return list_parts(self.path, "attention")

    def scores(self, run: str) -> RunScores:
        """Scores of ``run`` spread over the tiling rows (NaN where a tile was not scored).

        Raises
        ------
        StoreError
            If the run is missing, or its tile indices do not fit the tiling part.
        """
        if run in self._scores:
            return self._scores[run]
        attention = read_attention(self.path, run)
        values = np.asarray(attention.scores, np.float32)
        # One column per score (a slide may have no scored tile at all).
        values = values.reshape(len(values), int(np.prod(values.shape[1:], dtype=np.int64)))
        n = len(self.coords)
        index = np.asarray(attention.tile_index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise StoreError(
                f"{self.path}: attention/{run} refers to tiles outside the tiling part ({n} tiles)",
                hint="the slide was re-tiled after the run; rerun the MIL experiment",
            )
        full = np.full((n, values.shape[1]), np.nan, np.float32)
        full[index] = values
        info = attention.info
        kind = str(info.get("score_kind", "attention"))
        names = [str(c) for c in info.get("class_names") or info.get("columns") or []]
        if values.shape[1] == 1:
            columns: tuple[str, ...] = (kind,)
        else:
            labels = (
                names if len(names) == values.shape[1] else [str(k) for k in range(values.shape[1])]
            )
            columns = tuple(f"{kind}: {label}" for label in labels)
        probabilities = kind == "probability" and len(names) == values.shape[1] > 1
        scores = RunScores(run, columns, full, tuple(names) if probabilities else None)
        self._scores[run] = scores
        return scores

    def cell_table(self) -> CellTable | None:
        """The slide's cell table, or None when the store has no ``cells`` part."""
        path = store_cell_table(self.path, self.attrs)
        return CellTable(path) if path is not None else None

    def tile_at(self, x: float, y: float, run: str | None = None) -> dict[str, Any] | None:
        """The tile containing level-0 point ``(x, y)`` with its measurements, or None."""
        coords, extent = self.coords, self.tile_extent_px
        inside = (
            (coords[:, 0] <= x)
            & (x < coords[:, 0] + extent)
            & (coords[:, 1] <= y)
            & (y < coords[:, 1] + extent)
        )
        hits = np.flatnonzero(inside)
        if not len(hits):
            return None
        row = int(hits[-1])
        values = {name: float(v[row]) for name, v in self.qc.items()}
        if run is not None:
            scores = self.scores(run)
            values.update(
                {n: float(v[0]) for n, v in scores.measurements(slice(row, row + 1)).items()}
            )
        return {
            "tile": row,
            "x": int(coords[row, 0]),
            "y": int(coords[row, 1]),
            "extent_px": extent,
            "measurements": {k: v for k, v in values.items() if np.isfinite(v)},
        }
