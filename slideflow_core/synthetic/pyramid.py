"""Reduced pyramid levels built in one streaming pass over level 0.

Each reduced level keeps only one band of pixels (one row of its tiles). Level 0 hands down a
downsampled strip per tile row; when a band is full its tiles are JPEG-encoded into a
temporary file and the band, downsampled again, feeds the next level. Memory is therefore
proportional to the slide's width, never its area, and no level is ever held whole
(except levels small enough to keep for the thumbnail).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

# Levels up to this many pixels are also kept whole, to make the thumbnail from.
RETAIN_MAX_PX = 16 * 1024 * 1024
# Edge tiles extend past the image; fill the unused part with white, as scanners pad.
_PAD_VALUE = 255


def level_sizes(
    width_px: int, height_px: int, tile_px: int, downsample: int
) -> list[tuple[int, int]]:
    """``(width, height)`` of every level: divide by ``downsample`` until one tile holds it."""
    sizes = [(width_px, height_px)]
    while max(sizes[-1]) > tile_px:
        w, h = sizes[-1]
        sizes.append((max(1, w // downsample), max(1, h // downsample)))
    return sizes


def encode_tile(pixels: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG, YCbCr 4:2:0: the TIFF is tagged to match (photometric YCbCr, 2x2)."""
    return imagecodecs.jpeg8_encode(
        np.ascontiguousarray(pixels),
        level=quality,
        colorspace="RGB",
        outcolorspace="YCBCR",
        subsampling="420",
    )


def reduce_pixels(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Box-average downsample by an integer factor (PIL's C ``reduce``)."""
    return np.asarray(Image.fromarray(pixels).reduce(factor))


class TileStore:
    """Encoded tiles appended to an anonymous temporary file, read back in order."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        # Lives as long as the store (closed by close()), so no context manager here.
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._lengths: list[int] = []

    def append(self, data: bytes) -> None:
        """Store the next tile."""
        self._file.write(data)
        self._lengths.append(len(data))

    def __len__(self) -> int:
        return len(self._lengths)

    def __iter__(self) -> Iterator[bytes]:
        self._file.flush()
        self._file.seek(0)
        for length in self._lengths:
            yield self._file.read(length)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


@dataclass
class _Band:
    """The tile row of a reduced level currently being filled."""

    pixels: np.ndarray
    row: int = 0
    filled: bool = False


class ReducedLevel:
    """One reduced level: receives strips from the level above, stores its encoded tiles.

    Parameters
    ----------
    size_px
        ``(width, height)`` of this level.
    tile_px, downsample, quality
        Tile side, downsample from the level above, and JPEG quality.
    store
        Where the encoded tiles go.
    """

    def __init__(
        self,
        size_px: tuple[int, int],
        *,
        tile_px: int,
        downsample: int,
        quality: int,
        store: TileStore,
    ) -> None:
        self.width, self.height = size_px
        self.tile_px = tile_px
        self.downsample = downsample
        self.quality = quality
        self.store = store
        self.tiles_across = math.ceil(self.width / tile_px)
        self.tiles_down = math.ceil(self.height / tile_px)
        self._band = _Band(np.full((tile_px, self.tiles_across * tile_px, 3), _PAD_VALUE, np.uint8))
        retain = self.width * self.height <= RETAIN_MAX_PX
        self.whole = np.empty((self.height, self.width, 3), np.uint8) if retain else None

    def add_strip(self, strip: np.ndarray, source_row: int) -> np.ndarray | None:
        """Place the downsampled strip of the level-above tile row ``source_row``.

        Returns
        -------
        np.ndarray or None
            This level's own downsampled strip when the strip completed one of its tile rows.
        """
        strip_px = self.tile_px // self.downsample
        row, slot = divmod(source_row, self.downsample)
        if row != self._band.row:
            raise ValueError(f"strips must arrive in order: got row {source_row}")
        width = min(strip.shape[1], self._band.pixels.shape[1])
        self._band.pixels[slot * strip_px : (slot + 1) * strip_px, :width] = strip[:, :width]
        self._band.filled = True
        return self.flush() if slot == self.downsample - 1 else None

    def flush(self) -> np.ndarray | None:
        """Encode the current band (if it holds anything) and start the next one."""
        band = self._band
        if not band.filled:
            return None
        # Rows below the level's height come from padding only; they are not part of the level.
        if band.row < self.tiles_down:
            t = self.tile_px
            for tx in range(self.tiles_across):
                self.store.append(encode_tile(band.pixels[:, tx * t : (tx + 1) * t], self.quality))
            if self.whole is not None:
                rows = min(t, self.height - band.row * t)
                self.whole[band.row * t : band.row * t + rows] = band.pixels[:rows, : self.width]
        reduced = reduce_pixels(band.pixels, self.downsample)
        band.pixels.fill(_PAD_VALUE)
        band.row += 1
        band.filled = False
        return reduced

    @property
    def current_row(self) -> int:
        """Index of the tile row the band is filling."""
        return self._band.row

    @property
    def complete(self) -> bool:
        """True once every tile of the level is stored."""
        return len(self.store) == self.tiles_across * self.tiles_down


class Pyramid:
    """The chain of reduced levels below level 0."""

    def __init__(
        self,
        sizes: list[tuple[int, int]],
        *,
        tile_px: int,
        downsample: int,
        quality: int,
        temp_dir: str | os.PathLike[str],
    ) -> None:
        self.levels = [
            ReducedLevel(
                size,
                tile_px=tile_px,
                downsample=downsample,
                quality=quality,
                store=TileStore(temp_dir),
            )
            for size in sizes[1:]
        ]

    def add_strip(self, strip: np.ndarray, source_row: int) -> None:
        """Feed level 1 the downsampled strip of level-0 tile row ``source_row``."""
        self._cascade(0, strip, source_row)

    def _cascade(self, index: int, strip: np.ndarray | None, source_row: int) -> None:
        while strip is not None and index < len(self.levels):
            level = self.levels[index]
            row = level.current_row
            strip = level.add_strip(strip, source_row)
            index, source_row = index + 1, row

    def finish(self) -> None:
        """Flush partly filled bands, finest first so each feeds the next."""
        for index, level in enumerate(self.levels):
            row = level.current_row
            self._cascade(index + 1, level.flush(), row)
        incomplete = [i + 1 for i, level in enumerate(self.levels) if not level.complete]
        if incomplete:
            raise RuntimeError(f"pyramid levels {incomplete} are missing tiles")

    def close(self) -> None:
        """Delete the temporary tile files."""
        for level in self.levels:
            level.store.close()
