"""Planning a whole-slide segmentation: the window grid, its bands, and where output goes.

The slide is cut into square *core* tiles of ``tile_px`` pixels at the segmenter's
µm/px; each is read with ``overlap_px`` more on every side (its *window*), so a nucleus
on a core edge is seen whole by some window. Only cores touching tissue are read (the
tiling part's kept tiles of a store, or tissue detection on a bare slide). Rows of
cores are grouped in *bands*, the unit of parallel work and of resuming: each band's
cells go to their own staged Parquet file, written atomically.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from embedders.dense.base import Segmenter
from embedders.dense.stitch import DEFAULT_MIN_OVERLAP
from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.cells import cells_folder
from slideflow_core.provenance import file_fingerprint
from slideflow_core.slides import Slide, open_slide
from slideflow_core.stages import StageConfigError
from slideflow_core.store import StoreError, part_key, read_store_attrs
from tiling.tissue import detect_tissue

CELLS = "cells"
TABLE_NAME = "cells.parquet"
TILES = ("tissue", "all")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SegmentationError(SlideflowError):
    """A segmentation run cannot start or finish (bad input, incompatible output)."""


class SegmentConfigError(StageConfigError, ValueError):
    """A segmentation setting is invalid (a grid size, a tile selection, a resolution)."""


def _valid_part_name(name: str) -> bool:
    try:
        part_key(CELLS, name)
    except StoreError:
        return False
    return True


#: The fields that decide how a slide is cut, hence its cells (the rest say what runs).
GRID_FIELDS = ("tile_px", "overlap_px", "band_rows", "tiles", "min_overlap")


@dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """Which segmenter runs, and how a slide is cut for it (sizes in pixels at its µm/px).

    Parameters
    ----------
    segmenter
        A registered segmenter name (see :func:`embedders.dense.list_segmenters`).
    weights
        Weights file of a learned segmenter.
    target_mpp
        µm per pixel to segment at (default: the segmenter's own).
    segmenter_options
        Other keyword arguments for :func:`embedders.dense.create_segmenter`.
    name
        Run name: the store part ``cells/<name>`` (default: the segmenter's name).
    tile_px
        Side of a core tile.
    overlap_px
        Extra pixels read on every side of a core; at least the largest nucleus diameter.
    band_rows
        Rows of core tiles per band (one Ray task, one resumable unit).
    tiles
        ``"tissue"``: only cores touching tissue; ``"all"``: the whole slide.
    min_overlap
        Overlap (over the smaller outline) above which two outlines are one nucleus.
    """

    segmenter: str = "classical"
    weights: str | None = None
    target_mpp: float | None = None
    segmenter_options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    tile_px: int = 1024
    overlap_px: int = 64
    band_rows: int = 2
    tiles: str = "tissue"
    min_overlap: float = DEFAULT_MIN_OVERLAP

    def __post_init__(self) -> None:
        bad = []
        if not (isinstance(self.segmenter, str) and self.segmenter):
            bad.append(f"segmenter={self.segmenter!r} (a registered name)")
        if self.target_mpp is not None and not self.target_mpp > 0:
            bad.append(f"target_mpp={self.target_mpp!r} (µm/px > 0)")
        if not isinstance(self.segmenter_options, dict):
            bad.append(f"segmenter_options={self.segmenter_options!r} (a mapping)")
        if self.name is not None and not _valid_part_name(self.name):
            bad.append(f"name={self.name!r} (letters, digits, '.', '_', '-')")
        if not (isinstance(self.tile_px, int) and self.tile_px >= 64):
            bad.append(f"tile_px={self.tile_px!r} (an integer >= 64)")
        if not (isinstance(self.overlap_px, int) and 0 <= self.overlap_px <= self.tile_px // 2):
            bad.append(f"overlap_px={self.overlap_px!r} (0 to tile_px / 2)")
        if not (isinstance(self.band_rows, int) and self.band_rows >= 1):
            bad.append(f"band_rows={self.band_rows!r} (>= 1)")
        if self.tiles not in TILES:
            bad.append(f"tiles={self.tiles!r} (one of {TILES})")
        if not 0 < self.min_overlap < 1:
            bad.append(f"min_overlap={self.min_overlap!r} (in (0, 1))")
        if bad:
            raise SegmentConfigError(
                f"invalid SegmentConfig: {', '.join(bad)}",
                hint="each value above says what it must be",
            )

    @property
    def window_px(self) -> int:
        """Side of a window: the core and its overlap on both sides."""
        return self.tile_px + 2 * self.overlap_px

    def grid(self) -> dict[str, Any]:
        """The fields that decide how a slide is cut (part of a run's identity)."""
        return {key: getattr(self, key) for key in GRID_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a YAML section; ``SegmentConfig(**data)`` reads it back)."""
        return asdict(self)


def table_name(segmenter_name: str, name: str | None) -> str:
    """The part name of a run (``cells/<name>``): ``name`` or the segmenter's name made safe."""
    chosen = name or _UNSAFE.sub("_", segmenter_name).strip("._-")
    part_key(CELLS, chosen)
    return chosen


def is_slide_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a slide store (``.zarr``, or a folder holding ``zarr.json``)."""
    path = Path(path)
    return path.suffix == ".zarr" or (path / "zarr.json").is_file()


@dataclass(frozen=True)
class CellPlan:
    """Everything a band task needs, as small picklable data.

    Attributes
    ----------
    slide_id, slide_path, slide_mpp_override
        The slide and the calibration override used to open it.
    name
        Run name (the store part is ``cells/<name>``).
    store
        The slide store the table goes into, or None for a bare slide.
    output
        The final table (``<id>.cells/<name>/cells.parquet`` beside a store).
    stage
        Folder of staged band files.
    level, read_px, scale, mpp
        Pyramid level read, level pixels per window, level-0 pixels per window pixel,
        and µm per window pixel.
    cores
        ``(K, 2)`` int ``(col, row)`` of the core tiles to segment, row-major.
    bands
        ``(row_start, row_stop)`` of each band holding cores, in order.
    size0
        Level-0 ``(width, height)`` of the slide.
    identity
        What makes two runs interchangeable.
    """

    slide_id: str
    slide_path: str
    slide_mpp_override: float | None
    name: str
    store: str | None
    output: str
    stage: str
    config: SegmentConfig
    level: int
    read_px: int
    scale: float
    mpp: float
    cores: np.ndarray
    bands: tuple[tuple[int, int], ...]
    size0: tuple[int, int]
    identity: dict[str, Any]

    def open(self) -> Slide:
        """Open the slide as planned."""
        return open_slide(self.slide_path, mpp=self.slide_mpp_override, slide_id=self.slide_id)

    @property
    def step0(self) -> float:
        """Level-0 pixels between core tiles."""
        return self.config.tile_px * self.scale

    def band_cores(self, band: int) -> np.ndarray:
        """``(col, row)`` of the cores of band ``band``."""
        start, stop = self.bands[band]
        rows = self.cores[:, 1]
        return self.cores[(rows >= start) & (rows < stop)]

    def band_file(self, band: int) -> Path:
        """Staged Parquet file of band ``band``."""
        start, _ = self.bands[band]
        return Path(self.stage) / f"band-{start:06d}.parquet"


def _kept_tile_cores(
    store: Path, attrs: dict[str, Any], slide: Slide, step0: float, grid: tuple[int, int]
) -> np.ndarray:
    """Cores touched by the tiles that passed tiling QC (``(rows, cols)`` bool)."""
    import zarr

    group = zarr.open_group(str(store), mode="r")
    coords = np.asarray(group["coords"][:])[np.asarray(group["qc"]["keep"][:], bool)]
    info = attrs["parts"]["tiling"]
    size0 = float(info["tile_px"]) * float(info["mpp_actual"]) / slide.mpp
    return _boxes_to_cores(coords.astype(np.float64), size0, step0, grid)


def _boxes_to_cores(
    corners: np.ndarray, size0: float, step0: float, grid: tuple[int, int]
) -> np.ndarray:
    cols, rows = grid
    hit = np.zeros((rows, cols), bool)
    if not len(corners):
        return hit
    first = np.floor(corners / step0).astype(np.int64)
    last = np.floor((corners + size0 - 1e-6) / step0).astype(np.int64)
    span = int((last - first).max()) + 1
    for dy in range(span):
        for dx in range(span):
            c, r = first[:, 0] + dx, first[:, 1] + dy
            ok = (c <= last[:, 0]) & (r <= last[:, 1]) & (c < cols) & (r < rows)
            hit[r[ok], c[ok]] = True
    return hit


def _tissue_cores(slide: Slide, step0: float, grid: tuple[int, int]) -> np.ndarray:
    cols, rows = grid
    tissue = detect_tissue(slide).polygons
    r, c = np.mgrid[0:rows, 0:cols]
    boxes = shapely.box(c * step0, r * step0, (c + 1) * step0, (r + 1) * step0)
    return shapely.intersects(tissue, boxes)


def plan_cells(
    source: str | os.PathLike[str],
    segmenter: Segmenter,
    config: SegmentConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    slide_mpp: float | None = None,
) -> CellPlan:
    """Lay the window grid over a slide store or a slide file and decide its bands.

    Raises
    ------
    SegmentationError
        If a bare slide is given without ``out``, or ``out`` is given with a store.
    StoreError
        If ``source`` looks like a store but is not a complete one.
    """
    source = Path(source)
    run = table_name(segmenter.name, config.name)
    is_store = is_slide_store(source)
    if is_store:
        if out is not None:
            raise SegmentationError(
                f"out= was given for the slide store {source}",
                hint="a store keeps its cells in its own cells/<name> part; drop out=",
            )
        attrs = read_store_attrs(source)
        if "tiling" not in attrs.get("parts", {}):
            raise SegmentationError(f"{source} has no tiling part", hint="tile the slide first")
        slide_info = attrs["slide"]
        override = slide_info.get("mpp_override")
        slide = open_slide(slide_info["path"], mpp=override, slide_id=attrs["slide_id"])
        # Beside the store, outside its Zarr hierarchy (see slideflow_core.geojson.cells).
        output = cells_folder(source) / run / TABLE_NAME
        stage = cells_folder(source) / f".{run}.bands"
        origin: dict[str, Any] = {"tiling": attrs["parts"]["tiling"].get("identity")}
    else:
        if out is None:
            raise SegmentationError(
                f"no output given for the slide {source}",
                hint="pass out= (--out) with the cell table to write, e.g. cells.parquet",
            )
        override = slide_mpp
        slide = open_slide(source, mpp=slide_mpp)
        output = Path(out)
        stage = output.with_name(output.name + ".bands")
        origin = {"slide": {k: v for k, v in file_fingerprint(str(source)).items() if k != "mtime"}}
    with slide:
        choice = slide.best_level_for(segmenter.mpp)
        window = config.window_px
        read_px = choice.read_px(window)
        scale = read_px * slide.level_downsamples[choice.level] / window
        step0 = config.tile_px * scale
        width0, height0 = slide.dimensions
        grid = (math.ceil(width0 / step0), math.ceil(height0 / step0))
        if config.tiles == "all":
            hit = np.ones(grid[::-1], bool)
        elif is_store:
            hit = _kept_tile_cores(source, attrs, slide, step0, grid)
        else:
            hit = _tissue_cores(slide, step0, grid)
        slide_id, slide_path = slide.slide_id, slide.path
        level0_mpp = slide.mpp
    rows, cols = np.nonzero(hit)
    cores = np.column_stack([cols, rows]).astype(np.int64)
    bands = tuple(
        (start, start + config.band_rows)
        for start in range(0, grid[1], config.band_rows)
        if hit[start : start + config.band_rows].any()
    )
    identity = {
        "segmenter": segmenter.identity(),
        "config": config.grid(),
        "mpp": scale * level0_mpp,
        "level": choice.level,
        **origin,
    }
    return CellPlan(
        slide_id=slide_id,
        slide_path=slide_path,
        slide_mpp_override=override,
        name=run,
        store=str(source) if is_store else None,
        output=str(output),
        stage=str(stage),
        config=config,
        level=choice.level,
        read_px=read_px,
        scale=scale,
        mpp=scale * level0_mpp,
        cores=cores,
        bands=bands,
        size0=(width0, height0),
        identity=identity,
    )
