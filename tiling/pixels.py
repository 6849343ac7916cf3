"""Where a band's pixels come from and how they are stored: passed through, decoded or checked.

Three ways, chosen per slide by :func:`plan_pixels` from ``TilingConfig.codec``:

- ``"jpeg-passthrough"``: the grid is the pyramid level's own JPEG tiles, so
  every tile's stored JPEG stream goes into the Zarr shard undecoded. Tiling
  costs I/O, not decode. (Tiles crossing the level's edge, white outside it,
  are decoded and re-encoded.)
- ``"jpeg"``: tiles are decoded (DCT-scaled when the resize allows) and
  re-encoded as JPEG.
- ``"zstd"``, ``"lz4"``, ``"none"``: tiles equal ``Slide.read_at``, stored losslessly.

QC looks at each tile reduced ``qc_scale`` times (⅛ by default). Where tiles are
decoded anyway, that is an area reduction of the decoded tile. Where they are
not (pass-through, coordinates only), the QC image is read from the cheapest
source: the coarsest pyramid level at or finer than the QC resolution, decoded
with DCT scaling when its tiles are JPEG, so on a usual 4x pyramid one stored
tile of the next level serves the QC of 16 tiles and no tile is decoded in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from slideflow_core.codecs import encode_jpeg
from slideflow_core.errors import SlideflowError
from slideflow_core.slides import Slide
from tiling.config import TilingConfig
from tiling.qc import reduce_tiles, tile_qc
from tiling.reader import TileReader

#: Tiles per batch where tiles are not decoded (coordinates only, pass-through).
_GROUP_TILES = 256
_NO_INDICES = np.zeros(0, np.int64)
#: The "codec" of a store without pixels (coordinates and QC only).
COORDINATES_ONLY = "coordinates-only"
#: Codecs whose stored pixels equal the slide's (passed through or lossless).
EXACT_CODECS = ("jpeg-passthrough", "zstd", "lz4", "none")
#: Codecs whose tiles are decoded and re-encoded in the band, on its reader's threads.
REENCODED_CODECS = ("jpeg",)


class CodecError(SlideflowError):
    """The requested pixel codec cannot be used for a slide."""


@dataclass(frozen=True)
class PixelPlan:
    """How one slide's tiles are read, checked and stored; resolved once, when planning.

    The read methods are resolved here (``"auto"`` compares a sample of direct
    JPEG decodes with the backend), so the bands reading the slide need not.

    Attributes
    ----------
    codec, codec_reason
        The pixel codec (``"jpeg-passthrough"``, ``"jpeg"``, ``"zstd"``, ``"lz4"``,
        ``"none"``, or :data:`COORDINATES_ONLY`) and why it was chosen.
    level, read_px, tile_px, method
        Where tiles are read (pyramid level, level pixels per side), their output
        side, and the resolved :class:`~tiling.reader.TileReader` method.
    qc_level, qc_read_px, qc_px, qc_method
        Where QC images are read when tiles are not decoded (pass-through,
        coordinates only), and their side.
    qc_scale
        The reduction QC images have (see :func:`qc_reduction`).
    """

    codec: str
    codec_reason: str
    level: int
    read_px: int
    tile_px: int
    method: str
    qc_level: int
    qc_read_px: int
    qc_px: int
    qc_method: str
    qc_scale: int

    @property
    def exact(self) -> bool:
        """Whether stored pixels equal the slide's (passed through or lossless)."""
        return self.codec in EXACT_CODECS


def plan_pixels(
    slide: Slide, config: TilingConfig, *, level: int, read_px: int, coords: np.ndarray
) -> PixelPlan:
    """Choose the codec and resolve the read methods for one slide.

    ``"auto"`` and ``"jpeg-passthrough"`` pass the slide's JPEG tiles through
    when the grid is the level's stored tiles; otherwise ``"auto"`` re-encodes
    (``"jpeg"``) and ``"jpeg-passthrough"`` is an error.

    Raises
    ------
    CodecError
        If ``"jpeg-passthrough"`` was asked for and the grid does not allow it.
    """
    with TileReader(
        slide, level=level, read_px=read_px, tile_px=config.tile_px, method=config.read_method
    ) as reader:
        codec, reason = _choose_codec(slide, config, reader, coords)
        method = reader.method
    scale = qc_reduction(config.tile_px, config.qc_scale)
    qc_level = slide.best_level_for(config.target_mpp * scale, tolerance=config.tolerance).level
    qc_level = max(qc_level, level)
    extent = read_px * slide.level_downsamples[level]  # the tile's side in level-0 pixels
    qc_px = config.tile_px // scale
    qc_read_px = max(qc_px, round(extent / slide.level_downsamples[qc_level]))
    with TileReader(
        slide, level=qc_level, read_px=qc_read_px, tile_px=qc_px, method=config.read_method
    ) as qc_reader:
        qc_method = qc_reader.method
    return PixelPlan(
        codec=codec,
        codec_reason=reason,
        level=level,
        read_px=read_px,
        tile_px=config.tile_px,
        method=method,
        qc_level=qc_level,
        qc_read_px=qc_read_px,
        qc_px=qc_px,
        qc_method=qc_method,
        qc_scale=scale,
    )


def _choose_codec(
    slide: Slide, config: TilingConfig, reader: TileReader, coords: np.ndarray
) -> tuple[str, str]:
    if not config.store_pixels:
        return COORDINATES_ONLY, "no pixels stored"
    if config.codec not in ("auto", "jpeg-passthrough"):
        return config.codec, "requested"
    problem = "stain normalisation changes the pixels" if config.stain else None
    problem = problem or reader.passthrough_problem(coords)
    if problem is None:
        return "jpeg-passthrough", "the grid is the level's stored JPEG tiles"
    if config.codec == "jpeg-passthrough":
        raise CodecError(
            f"{slide.path}: cannot pass JPEG tiles through: {problem}",
            hint="use codec 'auto' or 'jpeg', or tile at the slide's own tile size and "
            "resolution with no overlap",
        )
    return "jpeg", f"re-encoded: {problem}"


def qc_reduction(tile_px: int, qc_scale: int) -> int:
    """The reduction QC runs at: ``qc_scale`` or less, so QC images divide evenly and keep 16 px."""
    for scale in (8, 4, 2):
        if scale <= qc_scale and tile_px % scale == 0 and tile_px // scale >= 16:
            return scale
    return 1


@dataclass(frozen=True)
class TileBatch:
    """Consecutive tiles of a band, checked and ready to store.

    Attributes
    ----------
    indices
        Indices into the band's coordinates (ascending).
    metrics
        Their QC (:func:`~tiling.qc.tile_qc`): one ``(B,)`` array per column.
    tiles
        ``(B, tile_px, tile_px, 3)`` pixels to store, or None.
    encoded
        Complete JPEG streams to store as they are, or None.
    """

    indices: np.ndarray
    metrics: dict[str, np.ndarray]
    tiles: np.ndarray | None = None
    encoded: list[bytes] | None = None


def read_batches(
    slide: Slide,
    coords: np.ndarray,
    plan: PixelPlan,
    *,
    jpeg_quality: int,
    threads: int = 1,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple[TileBatch, TileReader]]:
    """Read tiles at ``coords`` the way ``plan`` stores them, with their QC.

    Reading, QC, ``normalize`` and JPEG encoding run together on ``threads``
    threads, block by block, so every thread has work until the last block.

    Parameters
    ----------
    slide, coords, plan
        The slide, the tiles' level-0 positions and how they are read and stored.
    jpeg_quality
        For tiles encoded here (a ``"jpeg"`` store, or edge tiles of a pass-through one).
    threads
        Reader threads (``1`` reads in the caller's thread).
    normalize
        Stain normalisation of the stored pixels (QC sees the slide's own colours).

    Yields
    ------
    tuple
        Each batch, in ascending index order, with the reader that read it (for
        its method and DCT scale).
    """
    if plan.codec == COORDINATES_ONLY:
        with _qc_reader(slide, plan, threads) as reader:
            for indices, metrics in _grouped(reader.read(coords, then=tile_qc)):
                yield TileBatch(indices, metrics), reader
        return
    with TileReader(
        slide,
        level=plan.level,
        read_px=plan.read_px,
        tile_px=plan.tile_px,
        method=plan.method,
        dct_scaling=not plan.exact,
        threads=threads,
    ) as reader:
        if plan.codec == "jpeg-passthrough":
            with _qc_reader(slide, plan, threads) as qc_reader:
                metrics = _qc_of_all(qc_reader, coords)
            for indices, streams in _grouped(reader.read_encoded(coords)):
                encoded = _passthrough(reader, coords, indices, streams, jpeg_quality)
                batch = {name: values[indices] for name, values in metrics.items()}
                yield TileBatch(indices, batch, encoded=encoded), reader
            return

        def prepare(tiles: np.ndarray) -> TileBatch:
            metrics = tile_qc(reduce_tiles(tiles, plan.qc_scale))
            if normalize is not None:
                tiles = normalize(tiles)
            if plan.codec != "jpeg":
                return TileBatch(_NO_INDICES, metrics, tiles=tiles)
            encoded = [encode_jpeg(tile, quality=jpeg_quality) for tile in tiles]
            return TileBatch(_NO_INDICES, metrics, encoded=encoded)

        for indices, batch in reader.read(coords, then=prepare):
            yield replace(batch, indices=indices), reader


def _grouped(
    batches: Iterator[tuple[np.ndarray, Any]], tiles: int = _GROUP_TILES
) -> Iterator[tuple[np.ndarray, Any]]:
    """Consecutive reader batches joined into batches of at least ``tiles`` tiles.

    For tiles not decoded (QC images, encoded streams): QC and the writer then run
    once per few hundred tiles instead of once per reader block of a few.
    """
    indices: list[np.ndarray] = []
    parts: list[Any] = []
    for batch_indices, part in batches:
        indices.append(batch_indices)
        parts.append(part)
        if sum(map(len, indices)) >= tiles:
            yield _join(indices, parts)
            indices, parts = [], []
    if indices:
        yield _join(indices, parts)


def _join(indices: Sequence[np.ndarray], parts: Sequence[Any]) -> tuple[np.ndarray, Any]:
    """Batches' indices and parts (arrays, lists, or QC dicts of arrays) joined."""
    if isinstance(parts[0], dict):
        return np.concatenate(indices), {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(indices), np.concatenate(parts)
    return np.concatenate(indices), list(itertools.chain.from_iterable(parts))


def _qc_of_all(reader: TileReader, coords: np.ndarray) -> dict[str, np.ndarray]:
    """QC of every tile at ``coords``, in order (16 bytes a tile, not its QC image)."""
    batches = list(reader.read(coords, then=tile_qc))
    if not batches:
        return tile_qc(np.zeros((0, 3, 3, 3), np.uint8))
    return _join(*zip(*batches, strict=True))[1]


def _qc_reader(slide: Slide, plan: PixelPlan, threads: int) -> TileReader:
    """Reads tiles reduced for QC from the cheapest level that holds them, DCT-scaled."""
    return TileReader(
        slide,
        level=plan.qc_level,
        read_px=plan.qc_read_px,
        tile_px=plan.qc_px,
        method=plan.qc_method,
        dct_scaling=True,
        threads=threads,
    )


def _passthrough(
    reader: TileReader,
    coords: np.ndarray,
    indices: np.ndarray,
    streams: list[bytes | None],
    jpeg_quality: int,
) -> list[bytes]:
    """Stored JPEG tiles as they are; tiles that are not one whole stored tile are re-encoded."""
    missing = [i for i, stream in enumerate(streams) if stream is None]
    if missing:  # crossing the level's edge (white padding) or never stored
        decoded = np.concatenate([t for _, t in reader.read(coords[indices[missing]])])
        for j, tile in zip(missing, decoded, strict=True):
            streams[j] = encode_jpeg(tile, quality=jpeg_quality)
    return [s for s in streams if s is not None]
