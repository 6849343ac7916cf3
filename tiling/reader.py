"""Fast reading of many tiles from one slide, in bounded memory.

The naive way (CLAM's) calls ``read_region`` once per tile. :class:`TileReader`
groups neighbouring tiles of a row into blocks (like hs2p's supertiles) and
serves each block in one go:

``"per_tile"``
    One ``Slide.read_region`` per tile: the baseline.
``"region"``
    One ``Slide.read_region`` per block, cut into tiles. Works for every backend
    and format.
``"native"``
    For JPEG-tiled TIFF levels (Aperio SVS, generic tiled TIFF): the level's own
    JPEG tiles are decoded directly with libjpeg-turbo (see :mod:`tiling.native`),
    only those the tiles touch, each once, kept only until the last tile that
    needs it. Pixel-identical to OpenSlide and TiffSlide, and several times
    faster than either (``benchmarks/tiling.py``).

``"auto"`` picks ``"native"`` when the level is JPEG-tiled TIFF and a sample
decodes identically to the slide's backend, else ``"region"``. With
``dct_scaling=True`` a native read that shrinks tiles by 2, 4 or 8 or more
decodes the JPEG tiles reduced (libjpeg's DCT scaling) and area-resizes only
what remains: not pixel-equal to an area resize of the full decode (on CMU-1
at ½: 0.1 grey level mean absolute difference, 54 dB PSNR), for lossy stores
and cheap QC images. :meth:`TileReader.read_encoded` hands out the slide's own JPEG tiles
undecoded when tile positions are the level's stored tiles. Blocks are read in
a thread pool (OpenSlide, libjpeg-turbo and Pillow's resize all release the GIL)
with a bounded number in flight, so memory does not grow with the slide. Blocks
are runs of consecutive tiles, never reordered: batches come out in ascending
index order, so a writer can fill its shards in sequence. (Blocks of several
rows were measured no faster than one-row runs, and would break that order.)

Exactness: every method returns the pixels of ``Slide.read_region`` (resized once
with ``slides.resize``, like ``Slide.read_at``) for tiles at level 0 and, at
coarser levels, for tile positions on the level's pixel lattice (level-0 ``x, y``
that are multiples of an integer downsample, as grids laid at that level are).
Off the lattice, OpenSlide resamples a read by the sub-pixel remainder of
``x / downsample``; the block methods return the level pixels at
``floor(x / downsample)`` instead, as TiffSlide does.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

import numpy as np

from slideflow_core.codecs import REDUCED_SCALES
from slideflow_core.parallel import ordered_map
from slideflow_core.slides import Slide, resize
from tiling.native import JpegTileDecoder, file_key, find_jpeg_level

METHODS = ("per_tile", "region", "native")

_R = TypeVar("_R")

# Side of the centred block of stored JPEG tiles compared with the backend before
# "auto" trusts the direct decoder.
_PROBE_TILES = 2
# Probe verdicts of this process (a slide's level is probed by several readers: overview,
# tiles, QC images), by slide path, level, backend and file identity; the oldest go first.
_PROBED: OrderedDict[tuple[str, int, str, tuple[int, int, int]], int] = OrderedDict()
_PROBED_LOCK = threading.Lock()
_PROBED_MAX = 1024


class TileReader:
    """Reads square tiles of one pyramid level at level-0 coordinates.

    Parameters
    ----------
    slide
        The slide to read.
    level
        Pyramid level the tiles are read from.
    read_px
        Level pixels per tile side.
    tile_px
        Output tile side; tiles are resized once (``slides.resize``) when it
        differs from ``read_px``, exactly as ``Slide.read_at`` does.
    method
        ``"auto"``, ``"native"``, ``"region"`` or ``"per_tile"`` (see the module doc).
    max_region_px
        Widest block, in level pixels, read in one go.
    threads
        Blocks read concurrently.
    dct_scaling
        Let native reads that shrink tiles decode them reduced (see the module doc).

    Attributes
    ----------
    method
        The method actually used (``"auto"`` resolved), for provenance.
    method_reason
        Why that method was chosen.
    dct_scale
        The DCT scale native reads decode at (1: full decode).

    Raises
    ------
    ValueError
        If ``method`` is unknown, or ``"native"`` is forced on a level that is
        not JPEG-tiled TIFF.

    Examples
    --------
    >>> choice = slide.best_level_for(0.5)  # doctest: +SKIP
    >>> reader = TileReader(slide, level=choice.level, read_px=choice.read_px(256), tile_px=256)
    >>> for indices, tiles in reader.read(coords):  # doctest: +SKIP
    ...     store[indices] = tiles
    """

    def __init__(
        self,
        slide: Slide,
        *,
        level: int,
        read_px: int,
        tile_px: int,
        method: str = "auto",
        max_region_px: int = 4096,
        threads: int = 1,
        dct_scaling: bool = False,
    ) -> None:
        if method != "auto" and method not in METHODS:
            raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
        if not 0 <= level < slide.level_count:
            raise ValueError(f"level {level} out of range 0..{slide.level_count - 1}")
        if read_px < 1 or tile_px < 1 or max_region_px < 1 or threads < 1:
            raise ValueError("read_px, tile_px, max_region_px and threads must be positive")
        self.slide = slide
        self.level = level
        self.read_px = int(read_px)
        self.tile_px = int(tile_px)
        self.max_region_px = int(max_region_px)
        self.threads = int(threads)
        self._decoder: JpegTileDecoder | None = None
        self.method, self.method_reason = self._resolve(method)
        self.dct_scale = self._reduce() if dct_scaling else 1

    # -- method choice -----------------------------------------------------------------
    def _resolve(self, method: str) -> tuple[str, str]:
        if method in ("per_tile", "region"):
            return method, "requested"
        jpeg, why = find_jpeg_level(self.slide.path, self.slide.level_dimensions[self.level])
        if jpeg is None:
            if method == "native":
                raise ValueError(f"{self.slide.slide_id}: native read impossible: {why}")
            return "region", f"no direct decode: {why}"
        self._decoder = JpegTileDecoder(jpeg)
        if method == "native":
            return "native", "requested"
        key = (self.slide.path, self.level, self.slide.backend_choice.backend, file_key(jpeg.path))
        with _PROBED_LOCK:
            difference = _PROBED.get(key)
        if difference is None:
            difference = self._probe_difference()
            with _PROBED_LOCK:
                _PROBED[key] = difference
                while len(_PROBED) > _PROBED_MAX:
                    _PROBED.popitem(last=False)
        if difference:
            self._decoder = None
            return "region", f"direct JPEG decode differs from the backend by up to {difference}"
        return "native", "JPEG-tiled TIFF level; sample decodes identically to the backend"

    def _reduce(self) -> int:
        """Switch native reads to the largest DCT scale the shrink factor allows."""
        if self._decoder is None:
            return 1
        level = self._decoder.level
        for scale in sorted(REDUCED_SCALES, reverse=True):
            fits = self.read_px % scale == 0 and self.read_px // scale >= self.tile_px
            if scale > 1 and fits and not (level.tile_width % scale or level.tile_height % scale):
                self._decoder = JpegTileDecoder(level.reduced(scale))
                return scale
        return 1

    def passthrough_problem(self, coords: np.ndarray) -> str | None:
        """Why tiles at ``coords`` can't be the level's stored JPEG tiles, or None if they can."""
        if self._decoder is None or self.method != "native":
            return f"tiles are not read from stored JPEG tiles ({self.method_reason})"
        level = self._decoder.level
        if level.scale != 1:
            return "tiles are decoded reduced"
        if not self.read_px == self.tile_px == level.tile_width == level.tile_height:
            return (
                f"{self.tile_px} px tiles read from {self.read_px} level px, stored tiles are "
                f"{level.tile_width}x{level.tile_height} px"
            )
        level_xy = _level_px(np.asarray(coords, np.int64), self.slide.level_downsamples[self.level])
        if (level_xy % self.read_px).any():
            return "tile positions are off the stored tiles' grid"
        return None

    def _probe_difference(self) -> int:
        """Max abs difference between direct decode and the backend on a central sample."""
        assert self._decoder is not None
        jpeg = self._decoder.level
        col = jpeg.tiles_across // 2 // _PROBE_TILES * _PROBE_TILES
        row = jpeg.tiles_down // 2 // _PROBE_TILES * _PROBE_TILES
        left, top = col * jpeg.tile_width, row * jpeg.tile_height
        width = min(_PROBE_TILES * jpeg.tile_width, jpeg.width - left)
        height = min(_PROBE_TILES * jpeg.tile_height, jpeg.height - top)
        downsample = self.slide.level_downsamples[self.level]
        location = (round(left * downsample), round(top * downsample))
        if _level_px(np.array([location]), downsample).tolist() != [[left, top]]:
            return 255  # level-0 ↔ level pixel mapping is not exact here: stay with the backend
        ours = self._decoder.read(left, top, width, height)
        theirs = self.slide.read_region(location, self.level, (width, height))
        return int(np.abs(ours.astype(np.int16) - theirs).max())

    def close(self) -> None:
        """Release the direct decoder's file and cache (the slide stays open)."""
        if self._decoder is not None:
            self._decoder.close()

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------
    @overload
    def read(self, coords: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    @overload
    def read(
        self, coords: np.ndarray, *, then: Callable[[np.ndarray], _R]
    ) -> Iterator[tuple[np.ndarray, _R]]: ...

    def read(
        self, coords: np.ndarray, *, then: Callable[[np.ndarray], Any] | None = None
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Read the tiles whose level-0 top-left corners are ``coords``.

        Parameters
        ----------
        coords
            ``(N, 2)`` integer level-0 ``x, y``; any order (row-major is fastest).
        then
            Work on each block's tiles (QC, encoding...) done on the reader's
            threads right after the read; its result is yielded in place of the
            tiles. It must be thread-safe.

        Yields
        ------
        tuple
            ``(indices, tiles)``: int64 indices into ``coords`` and the matching
            ``(B, tile_px, tile_px, 3)`` uint8 tiles (or ``then(tiles)``). Every
            index is yielded exactly once, in ascending order; a batch is one
            block (a run of one row at most ``max_region_px`` wide), and at most
            ``2 * threads`` blocks are in memory at a time.
        """
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"coords must have shape (N, 2), got {coords.shape}")
        if len(coords) and not np.issubdtype(coords.dtype, np.integer):
            raise ValueError(f"coords must be integers (level-0 px), got {coords.dtype}")
        coords = coords.astype(np.int64, copy=False)
        level_xy = _level_px(coords, self.slide.level_downsamples[self.level])
        blocks = plan_blocks(level_xy, self.read_px, self.max_region_px)
        if self._decoder is not None:  # native reads decode one region per block
            boxes = np.array([self._native_box(level_xy[b]) for b in blocks]).reshape(-1, 4)
            self._decoder.expect(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
        read_block = {
            "per_tile": self._per_tile,
            "region": self._region,
            "native": self._native,
        }[self.method]

        def job(indices: np.ndarray) -> tuple[np.ndarray, Any]:
            tiles = read_block(coords[indices], level_xy[indices])
            return indices, tiles if then is None else then(tiles)

        # A lone reader thread reads inline: a pool only pays off from two threads.
        threads = self.threads if self.threads > 1 else 0
        yield from ordered_map(job, blocks, threads=threads, name="tile-reader")

    def read_encoded(self, coords: np.ndarray) -> Iterator[tuple[np.ndarray, list[bytes | None]]]:
        """The stored JPEG tile at each tile position, undecoded (see :meth:`passthrough_problem`).

        Yields
        ------
        tuple
            ``(indices, streams)`` in ascending index order: each a complete JPEG
            stream that decodes to the tile's pixels, or None where the tile crosses
            the level's edge or was never stored (read those with :meth:`read`).

        Raises
        ------
        ValueError
            If the positions are not the level's stored tiles.
        """
        problem = self.passthrough_problem(coords)
        if problem:
            raise ValueError(f"{self.slide.slide_id}: no pass-through: {problem}")
        assert self._decoder is not None
        decoder, side = self._decoder, self.read_px
        level = decoder.level
        level_xy = _level_px(np.asarray(coords, np.int64), self.slide.level_downsamples[self.level])
        inside = (level_xy >= 0).all(axis=1) & (level_xy[:, 0] + side <= level.width)
        inside &= level_xy[:, 1] + side <= level.height
        stored = level_xy[:, 1] // side * level.tiles_across + level_xy[:, 0] // side

        def job(indices: np.ndarray) -> tuple[np.ndarray, list[bytes | None]]:
            streams = decoder.encoded_tiles(stored[indices[inside[indices]]].tolist())
            it = iter(streams)
            return indices, [next(it) if inside[i] else None for i in indices.tolist()]

        blocks = plan_blocks(level_xy, side, self.max_region_px)
        threads = self.threads if self.threads > 1 else 0
        yield from ordered_map(job, blocks, threads=threads, name="tile-reader")

    def region(self, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Pixels of this reader's level like ``Slide.read_region(location, level, size)``.

        Read by the resolved method: decoded directly when it is ``"native"``,
        reduced ``dct_scale`` times (sides rounded up) when the reader decodes
        reduced; else by the slide's backend. A
        :data:`~slideflow_core.slides.slide.RegionRead` for :meth:`Slide.thumbnail
        <slideflow_core.slides.Slide.thumbnail>`, which resizes what it gets.
        """
        if self._decoder is None:
            return self.slide.read_region(location, self.level, size)
        downsample = self.slide.level_downsamples[self.level]
        left, top = _level_px(np.array([location], np.int64), downsample)[0].tolist()
        s = self.dct_scale
        right, bottom = -(-(left + int(size[0])) // s), -(-(top + int(size[1])) // s)
        return self._decoder.read(left // s, top // s, right - left // s, bottom - top // s)

    def _finish(self, region: np.ndarray) -> np.ndarray:
        if self.read_px == self.tile_px:
            return region
        return resize(region, (self.tile_px, self.tile_px))

    def _per_tile(self, coords: np.ndarray, level_xy: np.ndarray) -> np.ndarray:
        size = (self.read_px, self.read_px)
        out = np.empty((len(coords), self.tile_px, self.tile_px, 3), np.uint8)
        for i, (x, y) in enumerate(coords.tolist()):
            out[i] = self._finish(self.slide.read_region((x, y), self.level, size))
        return out

    def _region(self, coords: np.ndarray, level_xy: np.ndarray) -> np.ndarray:
        # The block's corner is the level-0 position of real tiles (min x, min y), so the
        # backend maps it to level pixels exactly as it maps those tiles.
        left, top = level_xy.min(axis=0)
        right, bottom = level_xy.max(axis=0) + self.read_px
        corner = (int(coords[:, 0].min()), int(coords[:, 1].min()))
        region = self.slide.read_region(corner, self.level, (right - left, bottom - top))
        out = np.empty((len(coords), self.tile_px, self.tile_px, 3), np.uint8)
        for i, (lx, ly) in enumerate((level_xy - (left, top)).tolist()):
            out[i] = self._finish(region[ly : ly + self.read_px, lx : lx + self.read_px])
        return out

    def _native_box(self, level_xy: np.ndarray) -> tuple[int, int, int, int]:
        """Left, top, width, height of a block's region on the (DCT-reduced) decoded level."""
        size = self.read_px // self.dct_scale
        scaled = level_xy // self.dct_scale
        left, top = scaled.min(axis=0).tolist()
        right, bottom = (scaled.max(axis=0) + size).tolist()
        return left, top, right - left, bottom - top

    def _native(self, coords: np.ndarray, level_xy: np.ndarray) -> np.ndarray:
        # One region per block, cut into tiles: a decoded stored tile is looked up once per
        # block rather than once per tile (small tiles, such as QC images, share them a lot).
        assert self._decoder is not None
        left, top, width, height = self._native_box(level_xy)
        region = self._decoder.read(left, top, width, height)
        size = self.read_px // self.dct_scale
        out = np.empty((len(coords), self.tile_px, self.tile_px, 3), np.uint8)
        for i, (x, y) in enumerate((level_xy // self.dct_scale - (left, top)).tolist()):
            out[i] = resize(region[y : y + size, x : x + size], (self.tile_px,) * 2)
        return out


def read_thumbnail(slide: Slide, max_px: int, *, method: str = "auto") -> np.ndarray:
    """``slide.thumbnail(max_px)``, its blocks read by a :class:`TileReader` with ``method``.

    ``"auto"`` decodes a JPEG-tiled TIFF level directly, with DCT scaling when the
    overview is at least 2x smaller than the level it is read from: the same pixels as
    the backend when read at full scale (checked on a sample, see the module doc), an
    area resize of a reduced decode otherwise (not pixel-equal to the backend's).
    """
    readers: dict[int, TileReader] = {}
    longest = max(slide.dimensions)

    def read(location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if level not in readers:
            # Level pixels per overview pixel, and the largest DCT scale not below the overview.
            factor = max(slide.level_dimensions[level]) / round(
                longest * min(1.0, max_px / longest)
            )
            scale = max(s for s in REDUCED_SCALES if s <= factor + 1e-9)
            # A reader shrinking ``scale`` level pixels into one decodes at that DCT scale.
            readers[level] = TileReader(
                slide, level=level, read_px=scale, tile_px=1, method=method, dct_scaling=True
            )
        return readers[level].region(location, size)

    try:
        return slide.thumbnail(max_px, read=read)
    finally:
        for reader in readers.values():
            reader.close()


def _level_px(coords: np.ndarray, downsample: float) -> np.ndarray:
    """Level pixel of level-0 positions, rounded down like ``Slide.read_region`` does."""
    if downsample == 1:
        return coords.copy()
    return np.floor(coords / downsample).astype(np.int64)


def plan_blocks(level_xy: np.ndarray, read_px: int, max_region_px: int) -> list[np.ndarray]:
    """Group consecutive tiles of one row into blocks of at most ``max_region_px`` level pixels.

    A block is a run of tiles, consecutive in the given order, on the same row and
    moving right, that fits in ``max_region_px`` and has no gap of a tile's width
    or more (reading the gap would cost more than another call). Blocks never
    reorder tiles, so batches come out in ascending index order and a writer can
    fill shards in sequence; a row-major grid gives the longest runs.

    Parameters
    ----------
    level_xy
        ``(N, 2)`` top-left of each tile in level pixels.
    read_px
        Tile side in level pixels.
    max_region_px
        Widest block; a tile wider than this forms a block of its own.

    Returns
    -------
    list of numpy.ndarray
        Consecutive index ranges partitioning ``range(N)``, in order.
    """
    if len(level_xy) == 0:
        return []
    xs, ys = level_xy[:, 0].tolist(), level_xy[:, 1].tolist()
    starts, left = [0], xs[0]
    for i in range(1, len(xs)):
        x, previous = xs[i], xs[i - 1]
        if (
            ys[i] != ys[i - 1]
            or x < previous
            or x - previous >= 2 * read_px  # a gap of at least one tile
            or x + read_px - left > max_region_px
        ):
            starts.append(i)
            left = x
    bounds = [*starts, len(xs)]
    return [np.arange(a, b) for a, b in itertools.pairwise(bounds)]
