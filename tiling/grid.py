"""The tile grid: where tiles of a physical size sit on a slide, in level-0 pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon

from slideflow_core.slides import LevelChoice, Slide
from tiling.config import TilingConfig


@dataclass(frozen=True)
class TileGrid:
    """Tile positions for one slide and how they are read.

    Attributes
    ----------
    coords
        ``(N, 2)`` int64 level-0 top-left ``x, y`` of every tile, row-major
        (sorted by ``y`` then ``x``).
    tissue_fraction
        ``(N,)`` float32 tissue coverage of each tile in the detection mask
        (1.0 everywhere when no mask was used).
    level
        Pyramid level the pixels are read from.
    read_px
        Level pixels read per tile side (resized to ``tile_px`` when different).
    tile_px
        Output tile side in pixels.
    extent_px
        Tile side in level-0 pixels (``read_px * level downsample``).
    stride_px
        Distance between neighbouring tiles in level-0 pixels.
    choice
        The level choice that produced this grid (target and actual mpp).
    """

    coords: np.ndarray
    tissue_fraction: np.ndarray
    level: int
    read_px: int
    tile_px: int
    extent_px: float
    stride_px: float
    choice: LevelChoice

    def __len__(self) -> int:
        return len(self.coords)

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` level-0 boxes ``x, y, width, height`` of every tile."""
        side = np.full((len(self.coords), 1), round(self.extent_px), dtype=np.int64)
        return np.hstack([self.coords, side, side])

    def centres(self) -> np.ndarray:
        """``(N, 2)`` float level-0 tile centres."""
        return self.coords + self.extent_px / 2.0


def _axis_positions(start: int, length: int, extent: float, stride: float, pad: bool) -> np.ndarray:
    """Tile starts along one axis: fully inside, or also partial ones when padding."""
    usable = length - (0 if pad else extent)
    if usable < 0:
        return np.zeros(0, dtype=np.int64)
    count = math.floor(usable / stride + 1e-9) + 1
    if pad:  # partial tiles: every start strictly inside the axis
        count = math.ceil(length / stride - 1e-9)
    return np.round(start + np.arange(count) * stride).astype(np.int64)


def plan_grid(
    slide: Slide,
    config: TilingConfig,
    *,
    coverage: np.ndarray | None = None,
    tissue: object | None = None,
    roi: MultiPolygon | None = None,
) -> TileGrid:
    """Lay the grid of ``config`` on ``slide`` and keep positions on tissue and in the ROI.

    Parameters
    ----------
    slide
        The slide (must have a calibration).
    config
        Tile size, resolution, overlap, edge policy and tissue threshold.
    coverage
        Precomputed tissue coverage per candidate tile (testing hook); normally
        computed from ``tissue``.
    tissue
        A :class:`~tiling.tissue.TissueMask` (anything with ``coverage(boxes)``);
        ``None`` tiles everything.
    roi
        Polygons restricting the grid: a tile is kept when its centre is inside.
    """
    choice = slide.best_level_for(config.target_mpp, tolerance=config.tolerance)
    read_px = choice.read_px(config.tile_px)
    downsample = slide.level_downsamples[choice.level]
    extent = read_px * downsample
    stride = extent * config.stride_px / config.tile_px
    x0, y0, width, height = slide.bounds or (0, 0, *slide.dimensions)
    pad = config.edge == "pad"
    xs = _axis_positions(x0, width, extent, stride, pad)
    ys = _axis_positions(y0, height, extent, stride, pad)
    grid_x, grid_y = np.meshgrid(xs, ys)
    coords = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.int64)
    side = np.full((len(coords), 1), round(extent), dtype=np.int64)
    boxes = np.hstack([coords, side, side])

    if coverage is None:
        coverage = (
            tissue.coverage(boxes)  # type: ignore[attr-defined]
            if tissue is not None
            else np.ones(len(coords), np.float32)
        )
    coverage = np.asarray(coverage, dtype=np.float32)
    # 0 means "any tissue at all": a tile with no tissue pixel is never kept.
    keep = coverage >= max(config.min_tissue_fraction, 1e-6)
    if roi is not None:
        centres = coords + extent / 2.0
        keep &= shapely.contains_xy(roi, centres[:, 0], centres[:, 1])
    return TileGrid(
        coords=coords[keep],
        tissue_fraction=coverage[keep],
        level=choice.level,
        read_px=read_px,
        tile_px=config.tile_px,
        extent_px=extent,
        stride_px=stride,
        choice=choice,
    )
