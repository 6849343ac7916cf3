"""Direct decoding of JPEG-tiled TIFF pyramid levels (Aperio SVS, generic tiled TIFF).

A slide backend decodes a level's JPEG tiles and then copies, converts and
composites them; for tiling, most of that work is overhead on top of the JPEG
decode itself (the floor). This module reads a level's own JPEG tiles straight
from the file (``os.pread`` on one descriptor, thread-safe) and decodes them with
libjpeg-turbo through :func:`imagecodecs.jpeg8_decode`, which releases the GIL so
several threads decode at once. Decoded tiles are kept in a small LRU so a tile
shared by neighbouring reads is decoded once.

Pixels equal OpenSlide's and TiffSlide's exactly (both decode with libjpeg-turbo
too); :func:`find_jpeg_level` only describes levels it can decode, and the tile
reader verifies equality on a sample before using this path automatically.

A level can also be read reduced (:meth:`JpegLevel.reduced`): every stored tile
is decoded at ½, ¼ or ⅛ size by libjpeg's DCT scaling, so a 2× downsampled read
costs less than a full decode and needs no resize. And a stored tile can be
taken as it is (:meth:`JpegTileDecoder.encoded_tiles`), a complete JPEG stream
for a store that keeps the slide's own tiles.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from slideflow_core.codecs import REDUCED_SCALES, complete_jpeg, decode_reduced

_JPEG = 7  # TIFF Compression tag value for "new-style" JPEG
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
_JFIF_APP0 = b"\xff\xe0"
_SCAN_FOR_MARKERS_BYTES = 64
# Most stored tiles read in one ``pread`` (bounds a read's size on huge tiles).
_RUN_TILES = 64


@dataclass(frozen=True, eq=False)
class JpegLevel:
    """Where a pyramid level's JPEG tiles live in its TIFF file and how to decode them.

    Attributes
    ----------
    path
        Local file path.
    width, height
        Level size in pixels.
    tile_width, tile_height
        Side of the stored JPEG tiles in pixels.
    offsets, bytecounts
        Byte offset and length of every tile, row-major (0 bytes = tile not stored).
    tables
        Shared JPEG tables (quantisation/Huffman) from the ``JPEGTables`` tag, if any.
    colorspace
        Colour space of the JPEG data: ``"YCBCR"`` (converted to RGB on decode) or
        ``"RGB"`` (Aperio writes RGB components without a colour transform).
    scale
        Tiles are decoded at ``1/scale`` size (1, 2, 4 or 8); sizes above are
        those of the reduced level.
    """

    path: str
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    bytecounts: np.ndarray
    tables: bytes | None
    colorspace: str
    scale: int = 1

    @property
    def tiles_across(self) -> int:
        """Number of tile columns."""
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        """Number of tile rows."""
        return -(-self.height // self.tile_height)

    def reduced(self, scale: int) -> JpegLevel:
        """The same level decoded at ``1/scale`` size (DCT scaling; ``scale`` of a full level).

        Raises
        ------
        ValueError
            If ``scale`` is not 1, 2, 4 or 8, the level is already reduced, or the
            stored tile sides are not multiples of ``scale``.
        """
        if scale not in REDUCED_SCALES or self.scale != 1:
            raise ValueError(f"can reduce a full level by {REDUCED_SCALES}, not {scale}")
        if self.tile_width % scale or self.tile_height % scale:
            raise ValueError(
                f"{self.tile_width}x{self.tile_height} px tiles don't divide by {scale}"
            )
        return replace(
            self,
            width=-(-self.width // scale),
            height=-(-self.height // scale),
            tile_width=self.tile_width // scale,
            tile_height=self.tile_height // scale,
            scale=scale,
        )

    def complete(self, data: bytes) -> bytes:
        """A stored tile's bytes as a self-contained JPEG stream that decodes to its pixels."""
        return complete_jpeg(data, self.tables, rgb=self.colorspace == "RGB")


def find_jpeg_level(path: str, size: tuple[int, int]) -> tuple[JpegLevel | None, str]:
    """Describe the JPEG-tiled TIFF page holding a pyramid level of ``size`` = (w, h).

    Returns
    -------
    tuple
        ``(level, reason)``: the description, or ``None`` with the reason the
        level can't be decoded directly (not a TIFF, not JPEG, not tiled RGB...).
    """
    if "://" in path:
        return None, "remote file (direct decode reads local files only)"
    try:
        key = file_key(path)
    except OSError as exc:
        return None, f"not readable as TIFF ({type(exc).__name__}: {exc})"
    return _find_jpeg_level(path, (int(size[0]), int(size[1])), key)


def file_key(path: str) -> tuple[int, int, int]:
    """Identity of a file's contents as far as ``stat`` tells: inode, size, modification time."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _find_jpeg_level(
    path: str, size: tuple[int, int], _file: tuple[int, int, int]
) -> tuple[JpegLevel | None, str]:
    """:func:`find_jpeg_level`, parsed once per file version and process (every reader of a
    slide's bands asks again)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ndpi:
                return None, "NDPI stores JPEG stripes with restart markers, not TIFF tiles"
            page = _page_of_size(tif, size)
            if page is None:
                return None, f"no TIFF page of {size[0]}x{size[1]} px in the file"
            problem = _unsupported(page)
            if problem:
                return None, problem
            level = _describe(path, page)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        return None, f"not readable as TIFF ({type(exc).__name__}: {exc})"
    return level, "JPEG-tiled TIFF level"


def _page_of_size(tif: Any, size: tuple[int, int]) -> Any:
    """The first tiled page (pyramid levels of every series first) with ``size``."""
    pages = [lvl.keyframe for series in tif.series for lvl in series.levels]
    pages += list(tif.pages)
    for page in pages:
        if page.is_tiled and (page.imagewidth, page.imagelength) == tuple(size):
            return page
    return None


def _unsupported(page: Any) -> str | None:
    """Why a page can't be decoded tile by tile as 8-bit RGB JPEG, or ``None``."""
    if page.compression != _JPEG:
        return f"compression {page.compression.name} is not JPEG"
    if page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        return f"photometric {page.photometric.name} is not RGB/YCbCr"
    if page.samplesperpixel != 3 or page.extrasamples:
        return f"{page.samplesperpixel} samples per pixel (need 3)"
    if page.bitspersample != 8 or page.planarconfig != 1 or page.imagedepth != 1:
        return "not 8-bit interleaved 2-D tiles"
    return None


def _describe(path: str, page: Any) -> JpegLevel:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    bytecounts = np.asarray(page.databytecounts, dtype=np.int64)
    return JpegLevel(
        path=path,
        width=int(page.imagewidth),
        height=int(page.imagelength),
        tile_width=int(page.tilewidth),
        tile_height=int(page.tilelength),
        offsets=offsets,
        bytecounts=bytecounts,
        tables=page.jpegtables or None,
        colorspace=_colorspace(path, page.photometric, offsets, bytecounts),
    )


def _colorspace(path: str, photometric: int, offsets: np.ndarray, counts: np.ndarray) -> str:
    """The JPEG data's colour space, following libtiff/OpenSlide conventions.

    Photometric YCbCr is YCbCr. Photometric RGB is ambiguous: Aperio writes RGB
    components with no colour transform (and no JFIF marker), while writers that
    add a JFIF header mean the usual YCbCr.
    """
    if photometric == _PHOTOMETRIC_YCBCR:
        return "YCBCR"
    stored = np.flatnonzero(counts)
    if stored.size:
        with open(path, "rb") as fh:
            head = os.pread(fh.fileno(), _SCAN_FOR_MARKERS_BYTES, int(offsets[stored[0]]))
        if _JFIF_APP0 in head:
            return "YCBCR"
    return "RGB"


class JpegTileDecoder:
    """Reads white-padded regions of one JPEG level, decoding only the tiles they touch.

    A stored tile shared by several reads (tiles that straddle stored-tile
    borders, overlapping grids) is decoded once and kept only while a later read
    announced with :meth:`expect` still needs it, within ``cache_bytes``; tiles
    no later read needs are never cached, so memory stays small.

    Thread-safe: any number of threads may call :meth:`read` at once (file reads
    use ``os.pread``; the cache is guarded by a lock; two threads may now and
    then decode the same tile, which is harmless). Pickles as its level
    description and reopens the file where it lands.

    Parameters
    ----------
    level
        The level to read (from :func:`find_jpeg_level`).
    cache_bytes
        Most bytes of decoded tiles kept; bounds memory whatever the slide size.
    """

    def __init__(self, level: JpegLevel, *, cache_bytes: int = 256 * 2**20) -> None:
        self.level = level
        self.cache_bytes = cache_bytes
        tile_bytes = level.tile_width * level.tile_height * 3
        self._capacity = max(4, cache_bytes // tile_bytes)
        self._setup()

    def _setup(self) -> None:
        self._file: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._uses: dict[int, int] = {}
        #: Stored tiles decoded so far by :meth:`read` (cache misses).
        self.decoded_tiles = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"level": self.level, "cache_bytes": self.cache_bytes, "capacity": self._capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.level = state["level"]
        self.cache_bytes = state["cache_bytes"]
        self._capacity = state["capacity"]
        self._setup()

    def _fd(self) -> int:
        with self._lock:
            if self._file is None:
                # Unbuffered: every read is a positioned pread, so threads never share a cursor.
                self._file = open(self.level.path, "rb", buffering=0)  # noqa: SIM115
            return self._file.fileno()

    def close(self) -> None:
        """Close the file and drop cached tiles (reopened on the next read)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = None
            self._cache.clear()
            self._uses.clear()

    def expect(
        self,
        lefts: np.ndarray,
        tops: np.ndarray,
        width: int | np.ndarray,
        height: int | np.ndarray,
    ) -> None:
        """Announce the regions about to be read (one size, or one per region), replacing any
        earlier announcement.

        Stored tiles touched by more than one announced region are cached until
        their last use.
        """
        touched = tiles_touched(self.level, lefts, tops, width, height)
        indices, counts = np.unique(touched, return_counts=True)
        with self._lock:
            self._uses = dict(zip(indices.tolist(), counts.tolist(), strict=True))
            self._cache.clear()

    def _stored(self, index: int) -> bytes:
        level = self.level
        return os.pread(self._fd(), int(level.bytecounts[index]), int(level.offsets[index]))

    def encoded_tiles(self, indices: Sequence[int]) -> list[bytes | None]:
        """Stored tiles (row-major indices) as complete JPEG streams, undecoded.

        None for a tile the file never stored (sparse TIFF). Tiles adjacent in the
        file are read in one ``pread``: scanners write a row's tiles one after the
        other, so a run of a row is one read.
        """
        level = self.level
        out: list[bytes | None] = [None] * len(indices)
        run: list[int] = []  # positions in ``indices`` of tiles adjacent in the file

        def flush() -> None:
            if not run:
                return
            first, last = indices[run[0]], indices[run[-1]]
            start = int(level.offsets[first])
            data = os.pread(
                self._fd(), int(level.offsets[last] + level.bytecounts[last]) - start, start
            )
            for j in run:
                offset = int(level.offsets[indices[j]]) - start
                out[j] = level.complete(data[offset : offset + int(level.bytecounts[indices[j]])])
            run.clear()

        for j, index in enumerate(indices):
            if int(level.bytecounts[index]) == 0:
                continue
            if run:
                previous = indices[run[-1]]
                adjacent = (
                    level.offsets[index] == level.offsets[previous] + level.bytecounts[previous]
                )
                if not adjacent or len(run) >= _RUN_TILES:
                    flush()
            run.append(j)
        flush()
        return out

    def decode_tile(self, index: int) -> np.ndarray:
        """Decode stored tile ``index`` (row-major) to ``(tile_h, tile_w, 3)`` RGB, uncached."""
        import imagecodecs

        level = self.level
        if int(level.bytecounts[index]) == 0:
            # Sparse TIFF: tile never written, shown as glass like OpenSlide does.
            return np.full((level.tile_height, level.tile_width, 3), 255, np.uint8)
        if level.scale > 1:
            return decode_reduced(level.complete(self._stored(index)), level.scale)
        return imagecodecs.jpeg8_decode(
            self._stored(index),
            tables=level.tables,
            colorspace=level.colorspace,
            outcolorspace="RGB",
        )

    def _tile(self, index: int) -> np.ndarray:
        with self._lock:
            tile = self._cache.get(index)
        decoded = tile is None
        if decoded:
            tile = self.decode_tile(index)
        with self._lock:
            self.decoded_tiles += decoded
            left = self._uses.get(index, 0) - 1
            if left > 0:
                self._uses[index] = left
                self._cache[index] = tile
                self._cache.move_to_end(index)
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
            else:
                self._uses.pop(index, None)
                self._cache.pop(index, None)
        return tile

    def read(
        self, left: int, top: int, width: int, height: int, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The ``(height, width, 3)`` region at level pixel ``(left, top)``, white outside.

        Parameters
        ----------
        left, top
            Level-pixel position of the region's top-left corner (may be negative).
        width, height
            Region size in pixels.
        out
            Optional ``(height, width, 3)`` uint8 array to fill instead of a new one.
        """
        level = self.level
        if out is None:
            out = np.empty((height, width, 3), np.uint8)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + width, level.width), min(top + height, level.height)
        if x0 > left or y0 > top or x1 < left + width or y1 < top + height:
            out[...] = 255  # part of the region lies outside the level: glass
        if x1 <= x0 or y1 <= y0:
            return out
        tw, th = level.tile_width, level.tile_height
        for row in range(y0 // th, (y1 - 1) // th + 1):
            # Clip to the image: stored edge tiles carry padding beyond it.
            ty0, ty1 = max(y0, row * th), min(y1, (row + 1) * th)
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                tx0, tx1 = max(x0, col * tw), min(x1, (col + 1) * tw)
                tile = self._tile(row * level.tiles_across + col)
                out[ty0 - top : ty1 - top, tx0 - left : tx1 - left] = tile[
                    ty0 - row * th : ty1 - row * th, tx0 - col * tw : tx1 - col * tw
                ]
        return out


def tiles_touched(
    level: JpegLevel,
    lefts: np.ndarray,
    tops: np.ndarray,
    width: int | np.ndarray,
    height: int | np.ndarray,
) -> np.ndarray:
    """Row-major indices of the stored tiles under each region, once per region touching them.

    Parameters
    ----------
    level
        The JPEG level.
    lefts, tops
        Level-pixel top-left corners of the regions (may lie outside the level).
    width, height
        Region sizes: one shared by all regions, or one per region.
    """
    cols = _tile_span(np.asarray(lefts), np.asarray(width), level.tile_width, level.width)
    rows = _tile_span(np.asarray(tops), np.asarray(height), level.tile_height, level.height)
    touched = [np.zeros(0, np.int64)]
    for dy in range(int((rows[1] - rows[0]).max(initial=-1)) + 1):
        for dx in range(int((cols[1] - cols[0]).max(initial=-1)) + 1):
            row, col = rows[0] + dy, cols[0] + dx
            inside = (row <= rows[1]) & (col <= cols[1])
            touched.append(row[inside] * level.tiles_across + col[inside])
    return np.concatenate(touched)


def _tile_span(
    starts: np.ndarray, length: np.ndarray, tile: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """First and last stored tile (inclusive; last < first if none) under each span."""
    low, high = np.clip(starts, 0, limit), np.clip(starts + length, 0, limit)
    first = low // tile
    last = np.where(high > low, (high - 1) // tile, first - 1)
    return first, last
