"""Level-0 tile rows: render, JPEG-encode and downsample one row of tiles.

Rows are the unit of parallel work. PIL's compositing and the per-tile Python glue hold the
GIL (two threads ran slower than one), so rows run in worker processes, each with its own
renderer for the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from slideflow_core.synthetic.pyramid import encode_tile
from slideflow_core.synthetic.render import TileRenderer
from slideflow_core.synthetic.scene import Scene


@dataclass
class Row:
    """One rendered level-0 tile row."""

    tiles: list[bytes]
    strip: np.ndarray  # the row downsampled once, for level 1
    pixels: np.ndarray | None  # the full row, only when level 0 is kept whole


class RowRenderer:
    """Renders level-0 tile rows of one slide.

    Parameters
    ----------
    renderer
        Pixel source for the slide.
    keep_pixels
        Also return each row's full pixels (for small slides kept whole for the thumbnail).
    """

    def __init__(self, renderer: TileRenderer, *, keep_pixels: bool) -> None:
        spec = renderer.scene.truth.spec
        self.renderer = renderer
        self.tile_px = spec.tile_px
        self.downsample = spec.level_downsample
        self.quality = spec.jpeg_quality
        self.keep_pixels = keep_pixels
        self.drawn = renderer.drawn_tiles()
        self.glass_period_tiles = renderer.glass_period_px // spec.tile_px
        # Bare glass repeats every few tiles: encode each variant once and reuse the bytes.
        self._glass = {
            (ty, tx): self._finish(renderer.glass_tile(tx, ty))
            for ty in range(self.glass_period_tiles)
            for tx in range(self.glass_period_tiles)
        }

    def _finish(self, image: Image.Image) -> tuple[bytes, np.ndarray, np.ndarray]:
        """JPEG bytes, level-1 block and pixels of a rendered tile."""
        tile = np.asarray(image)
        return encode_tile(tile, self.quality), np.asarray(image.reduce(self.downsample)), tile

    def __call__(self, ty: int) -> Row:
        """Render tile row ``ty``."""
        t, d, across = self.tile_px, self.downsample, self.renderer.tiles_across
        period = self.glass_period_tiles
        tiles: list[bytes] = []
        strip = np.empty((t // d, across * (t // d), 3), np.uint8)
        pixels = np.empty((t, across * t, 3), np.uint8) if self.keep_pixels else None
        for tx in range(across):
            if self.drawn[ty, tx]:
                data, small, tile = self._finish(self.renderer.render_tile(tx, ty))
            else:
                data, small, tile = self._glass[ty % period, tx % period]
            tiles.append(data)
            strip[:, tx * (t // d) : (tx + 1) * (t // d)] = small
            if pixels is not None:
                pixels[:, tx * t : (tx + 1) * t] = tile
        return Row(tiles, strip, pixels)


# The worker process's renderer, set once by ``init_worker`` (process-pool initializer).
_worker_rows: RowRenderer | None = None


def init_worker(scene: Scene, keep_pixels: bool) -> None:
    """Process-pool initializer: build this process's renderer (and texture bank)."""
    global _worker_rows
    _worker_rows = RowRenderer(TileRenderer(scene), keep_pixels=keep_pixels)


def render_row_in_worker(ty: int) -> Row:
    """Process-pool task: render tile row ``ty`` with the renderer from ``init_worker``."""
    if _worker_rows is None:
        raise RuntimeError("init_worker was not called in this process")
    return _worker_rows(ty)
