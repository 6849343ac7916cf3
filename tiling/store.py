"""The tiling part of a slide store: ``coords``, ``tiles``, ``qc/*``, ``tissue_mask``.

Layout (Zarr v3, one store per slide)::

    <slide_id>.zarr/
      coords            (N, 2) int64   level-0 top-left x, y, row-major; like ``qc/*``,
                                       one chunk (one file) per 65,536 rows
      tiles             (N, H, W, 3) uint8, one chunk per tile, ``shard_tiles`` per file;
                        JPEG chunks (codec ``slideflow_core.jpeg``: the slide's own tiles
                        passed through, or re-encoded) or Zstandard/LZ4 (lossless)
      qc/<metric>       (N,) float32  tissue_fraction, background_fraction, blur, pen_fraction,
                                      mask_tissue_fraction
      qc/keep           (N,) bool     tiles passing the QC thresholds recorded in the attributes
      tissue_mask       (h, w) uint8  the detection mask, with its level-0 downsample

Pixels are written one whole shard at a time (a shard is rewritten on every
partial write); passed-through JPEG tiles are laid into the shard as they are,
without a decode. Parallel bands are shard-aligned so no two tasks ever
write the same file. Every chunk (every tile) carries a CRC32C, and the part's
marker lists every file with its size and checksum, so a damaged store is
refused rather than read as white tiles.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.sync import sync

from slideflow_core.codecs import JpegCodec
from slideflow_core.geojson.cells import cells_folder
from slideflow_core.shards import write_encoded_shard
from slideflow_core.store import (
    checksummed,
    commit_store,
    default_codecs,
    mark_part,
    start_store,
    use_fast_codecs,
)
from slideflow_core.zarr_metadata import TILE_DIMS, tile_store_attributes

PART = "tiling"
#: What the tiling part writes at the store's root (its manifest covers these).
ARRAYS = ("coords", "tiles", "qc", "tissue_mask")


def _pixel_codecs(codec: str, jpeg_quality: int) -> dict[str, Any]:
    """``create_array`` keywords storing tiles with ``codec`` (a resolved codec name)."""
    if codec in ("jpeg", "jpeg-passthrough"):
        return {"serializer": JpegCodec(quality=jpeg_quality), "compressors": checksummed()}
    if codec == "zstd":
        return {"compressors": checksummed(ZstdCodec(level=1))}
    if codec == "lz4":
        return {"compressors": checksummed(BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"))}
    return {"compressors": checksummed()}


#: Rows per chunk of the coordinates and QC columns: a slide's whole column is one
#: file (a few hundred kB at most), written once, so creating and committing a store
#: makes a few files rather than one per column and shard.
_COLUMN_ROWS = 1 << 16


def _qc_kind(column: str) -> tuple[str, Any]:
    """Stored type and fill value of a QC column the bands fill: the verdict ``keep`` is
    bool (False until written), the metrics float32 (NaN until written)."""
    return ("bool", False) if column == "keep" else ("float32", np.nan)


def create_tile_store(
    final: str | Path,
    *,
    coords: np.ndarray,
    mask_tissue_fraction: np.ndarray,
    tile_px: int,
    qc_columns: tuple[str, ...],
    store_pixels: bool,
    shard_tiles: int,
    tissue_mask: np.ndarray | None,
    attrs: dict[str, Any],
    tile_mpp: float | None,
    codec: str = "zstd",
    jpeg_quality: int = 90,
) -> Path:
    """Create the partial store for ``final`` with coordinates and empty arrays.

    ``codec`` is the resolved pixel codec (``"jpeg-passthrough"``, ``"jpeg"``,
    ``"zstd"``, ``"lz4"`` or ``"none"``); ``tile_mpp`` the tiles' µm/px. Every
    array gets its attributes (:func:`~slideflow_core.zarr_metadata.tile_store_attributes`)
    as it is created, and the root its OME-Zarr metadata, so committing the store
    writes no array metadata again.
    """
    n = len(coords)
    chunk = max(1, min(shard_tiles, n))
    rows = max(1, min(n, _COLUMN_ROWS))
    codecs = default_codecs()
    qc_column = {
        "chunks": (rows,),
        "compressors": codecs,
        "dimension_names": TILE_DIMS["qc"],
    }
    arrays: dict[str, dict[str, Any]] = {
        "coords": {
            "data": np.asarray(coords, np.int64),
            "chunks": (rows, 2),
            "compressors": codecs,
            "dimension_names": TILE_DIMS["coords"],
        },
        "qc/mask_tissue_fraction": {
            "data": np.asarray(mask_tissue_fraction, np.float32),
            **qc_column,
        },
        **{
            f"qc/{column}": {
                "shape": (n,),
                "dtype": _qc_kind(column)[0],
                "fill_value": _qc_kind(column)[1],
                **qc_column,
            }
            for column in (*qc_columns, "keep")
        },
    }
    if store_pixels:
        arrays["tiles"] = {
            "shape": (n, tile_px, tile_px, 3),
            "dtype": "uint8",
            "chunks": (1, tile_px, tile_px, 3),
            "shards": (chunk, tile_px, tile_px, 3),
            **_pixel_codecs(codec, jpeg_quality),
            "fill_value": 255,
            "dimension_names": TILE_DIMS["tiles"],
        }
    if tissue_mask is not None:
        arrays["tissue_mask"] = {
            "data": np.asarray(tissue_mask, np.uint8),
            "chunks": tissue_mask.shape or (1,),
            "compressors": codecs,
            "dimension_names": TILE_DIMS["tissue_mask"],
        }

    attributes, root_attrs = tile_store_attributes(
        attrs, list(arrays), tile_mpp=tile_mpp, tile_px=tile_px
    )
    partial = start_store(final, {**attrs, **root_attrs})

    async def create_all() -> None:  # one trip through Zarr's event loop, arrays in parallel
        root = await zarr.api.asynchronous.open_group(store=str(partial), mode="r+")
        groups = {"": root, "qc": await root.require_group("qc")}
        await asyncio.gather(
            *(
                groups[path.rpartition("/")[0]].create_array(
                    path.rpartition("/")[2], attributes=attributes[path], **spec
                )
                for path, spec in arrays.items()
            )
        )

    sync(create_all())
    return partial


class BandWriter:
    """Buffers tiles of one shard-aligned band, writes whole shards, and gathers the band's QC.

    The QC values are returned by :meth:`flush` and written by the commit, every band's
    at once (:func:`write_qc`): a few kilobytes a band, not worth a trip through Zarr
    per band.

    Parameters
    ----------
    store
        The partial store.
    start, stop
        Tile index range of the band; ``start`` is a multiple of ``shard_tiles``.
    shard_tiles
        Tiles per shard.
    columns
        The QC columns :meth:`add` is given.
    pixels
        Whether the store has a ``tiles`` array (False: coordinates only).
    """

    def __init__(
        self,
        store: str | Path,
        start: int,
        stop: int,
        shard_tiles: int,
        *,
        columns: Sequence[str],
        pixels: bool = True,
    ) -> None:
        use_fast_codecs()
        self._tiles = zarr.open_array(store=str(store), path="tiles", mode="r+") if pixels else None
        self.start, self.stop, self.shard = start, stop, shard_tiles
        self._metrics = {c: np.empty(stop - start, _qc_kind(c)[0]) for c in columns}
        self._done = np.zeros(stop - start, bool)
        self._buffer: np.ndarray | None = None
        self._encoded: list[bytes | None] = []
        self._filled = np.zeros(0, bool)
        self._shard_start = -1
        #: Shard files written from encoded tiles: key -> (size, checksum), for the manifest.
        self.written: dict[str, tuple[int, str]] = {}

    def _open_shard(self, shard_start: int) -> None:
        size = min(self.shard, self.stop - shard_start)
        if self._tiles is not None:
            shape = (size, *self._tiles.shape[1:])
            if self._buffer is None or self._buffer.shape != shape:
                self._buffer = np.empty(shape, np.uint8)
        self._encoded = [None] * size
        self._filled = np.zeros(size, bool)
        self._shard_start = shard_start

    def add(
        self,
        indices: np.ndarray,
        tiles: np.ndarray | None,
        metrics: dict[str, Any],
        *,
        encoded: list[bytes] | None = None,
    ) -> None:
        """Add tiles at absolute ``indices`` (ascending, inside the band) with their QC.

        Give pixels as ``tiles`` (lossless stores, written through Zarr), or
        (JPEG stores) as ``encoded`` complete JPEG streams that go into the
        shard unchanged, with no trip through Zarr's codec pipeline; a shard
        takes one or the other.
        """
        indices = np.asarray(indices, np.int64)
        if self._tiles is not None and tiles is None and encoded is None:
            raise ValueError("the store holds pixels: give the tiles or their JPEG streams")
        for column, values in self._metrics.items():
            values[indices - self.start] = metrics[column]
        self._done[indices - self.start] = True
        for j, index in enumerate(indices.tolist()):
            shard_start = self.start + (index - self.start) // self.shard * self.shard
            if shard_start != self._shard_start:
                self._write_shard()
                self._open_shard(shard_start)
            k = index - shard_start
            if encoded is not None:
                self._encoded[k] = encoded[j]
            elif self._buffer is not None and tiles is not None:
                self._buffer[k] = tiles[j]
            self._filled[k] = True

    def _write_shard(self) -> None:
        """Write the current shard (it must be complete)."""
        if self._shard_start < 0:
            return
        if not self._filled.all():
            missing = int((~self._filled).sum())
            raise RuntimeError(f"shard at {self._shard_start} is missing {missing} tiles")
        end = self._shard_start + len(self._filled)
        if self._tiles is not None and self._encoded[0] is not None:
            # A store of fewer tiles than ``shard_tiles`` has one smaller shard.
            per_shard = self._tiles.shards[0]
            padding: list[bytes | None] = [None] * (per_shard - len(self._encoded))
            shard = (self._shard_start // per_shard, 0, 0, 0)
            key, size, checksum = write_encoded_shard(
                self._tiles, shard, [*self._encoded, *padding]
            )
            self.written[key] = (size, checksum)
        elif self._tiles is not None and self._buffer is not None:
            self._tiles[self._shard_start : end] = self._buffer
        self._shard_start = -1

    def flush(self) -> dict[str, np.ndarray]:
        """Write the last shard (every tile must have been added); returns the band's QC."""
        self._write_shard()
        if not self._done.all():
            missing = int((~self._done).sum())
            raise RuntimeError(f"band at {self.start} is missing {missing} tiles")
        return self._metrics


def write_qc(
    store: str | Path, n_tiles: int, bands: Sequence[tuple[int, dict[str, np.ndarray]]]
) -> None:
    """Write the QC columns of every band, given as ``(start, columns)`` in any order.

    Raises
    ------
    RuntimeError
        If the bands do not cover tiles ``0..n_tiles`` exactly once.
    """
    ordered = sorted(bands, key=lambda band: band[0])
    end = 0
    for start, qc in ordered:
        if start != end:
            raise RuntimeError(f"{store}: the bands' QC leaves tiles {end}..{start} out")
        end += len(next(iter(qc.values())))
    if end != n_tiles:
        raise RuntimeError(f"{store}: the bands' QC covers {end} of {n_tiles} tiles")
    if not ordered:
        return
    columns = {c: np.concatenate([qc[c] for _, qc in ordered]) for c in ordered[0][1]}

    async def write_all() -> None:  # every column in one trip through Zarr's event loop
        group = await zarr.api.asynchronous.open_group(store=str(store), mode="r+")
        arrays = [await group.getitem(f"qc/{column}") for column in columns]
        await asyncio.gather(
            *(a.setitem(slice(None), v) for a, v in zip(arrays, columns.values(), strict=True))
        )

    sync(write_all())


def finish_tile_store(
    partial: str | Path,
    final: str | Path,
    info: dict[str, Any],
    *,
    known: Mapping[str, tuple[int, str]] | None = None,
) -> Path:
    """Record the tiling part as complete, with the manifest of its files, and commit the store.

    ``known`` are the sizes and checksums of files the writers computed as they
    wrote them (:attr:`BandWriter.written`), which the manifest need not read back.
    Cell tables beside a store this one replaces (``<id>.cells/``) described the old
    tiles; no part of the new store refers to them, so they go once it is in place.
    """
    mark_part(partial, PART, info, files=ARRAYS, known=known)
    committed = commit_store(partial, final)
    shutil.rmtree(cells_folder(committed), ignore_errors=True)
    return committed
