"""Deep Zoom (DZI) tiles cut on the fly from a slide, with a small cache of recent tiles.

Deep Zoom level ``L`` (of ``max_level + 1``) is the slide scaled by
``2 ** (L - max_level)``; each tile is read from the coarsest pyramid level at
least that fine and resized once. Reads that would exceed ``MAX_READ_PX`` a
side (slides without a coarse pyramid, viewed zoomed out) are cut from a
cached overview instead, so memory stays bounded.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

from slideflow_core.slides import Slide, resize

MAX_READ_PX = 4096
OVERVIEW_PX = 2048


class TileAddressError(LookupError):
    """A Deep Zoom tile address outside the pyramid (served as 404)."""


class DeepZoom:
    """The Deep Zoom pyramid of one slide.

    Parameters
    ----------
    slide
        An open slide (thread-safe reads).
    tile_px
        Tile side (no overlap).
    quality
        JPEG quality.
    cache_tiles
        Recent tiles kept encoded in memory.
    """

    def __init__(
        self, slide: Slide, *, tile_px: int = 256, quality: int = 80, cache_tiles: int = 512
    ) -> None:
        self.slide = slide
        self.tile_px = tile_px
        self.quality = quality
        width, height = slide.dimensions
        self.max_level = max(0, math.ceil(math.log2(max(width, height))))
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()
        self._overview: np.ndarray | None = None

    def dimensions(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of Deep Zoom level ``level``."""
        factor = 2 ** (self.max_level - level)
        width, height = self.slide.dimensions
        return max(1, math.ceil(width / factor)), max(1, math.ceil(height / factor))

    def grid(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at ``level``."""
        width, height = self.dimensions(level)
        return math.ceil(width / self.tile_px), math.ceil(height / self.tile_px)

    def dzi(self) -> str:
        """The ``.dzi`` descriptor."""
        width, height = self.slide.dimensions
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="jpeg" Overlap="0" TileSize="{self.tile_px}">'
            f'<Size Width="{width}" Height="{height}"/></Image>\n'
        )

    def tile(self, level: int, col: int, row: int) -> bytes:
        """JPEG bytes of one tile.

        Raises
        ------
        TileAddressError
            If the level, column or row is outside the pyramid.
        """
        if not 0 <= level <= self.max_level:
            raise TileAddressError(f"level {level} outside 0..{self.max_level}")
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileAddressError(f"tile {col},{row} outside {cols}x{rows} at level {level}")
        key = (level, col, row)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = self._encode(self._pixels(level, col, row))
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def _pixels(self, level: int, col: int, row: int) -> np.ndarray:
        factor = 2 ** (self.max_level - level)
        width, height = self.dimensions(level)
        out_w = min(self.tile_px, width - col * self.tile_px)
        out_h = min(self.tile_px, height - row * self.tile_px)
        x0, y0 = col * self.tile_px * factor, row * self.tile_px * factor
        downsamples = self.slide.level_downsamples
        best = max((i for i, d in enumerate(downsamples) if d <= factor * 1.01), default=0)
        ds = downsamples[best]
        read = (math.ceil(out_w * factor / ds), math.ceil(out_h * factor / ds))
        if max(read) > MAX_READ_PX:
            return self._from_overview(x0, y0, out_w * factor, out_h * factor, (out_w, out_h))
        region = self.slide.read_region((x0, y0), best, read)
        return region if read == (out_w, out_h) else resize(region, (out_w, out_h))

    def _from_overview(
        self, x0: float, y0: float, w0: float, h0: float, size: tuple[int, int]
    ) -> np.ndarray:
        with self._lock:
            if self._overview is None:
                self._overview = self.slide.thumbnail(OVERVIEW_PX)
            overview = self._overview
        scale = overview.shape[1] / self.slide.dimensions[0]
        left, top = int(x0 * scale), int(y0 * scale)
        right = max(left + 1, math.ceil((x0 + w0) * scale))
        bottom = max(top + 1, math.ceil((y0 + h0) * scale))
        crop = Image.fromarray(overview[top:bottom, left:right])
        return np.asarray(crop.resize(size, Image.Resampling.BILINEAR))

    def _encode(self, pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()
