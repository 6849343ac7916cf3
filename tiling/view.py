"""Reading tile stores back: one slide as a :class:`TileStore`, a cohort as Dask arrays."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import zarr

from slideflow_core.codecs import JpegCodec, decode_jpeg
from slideflow_core.shards import read_encoded_chunks, rows_readable
from slideflow_core.slides import Slide, open_slide
from slideflow_core.store import (
    StoreError,
    chunk_keys,
    read_store_attrs,
    reading_part,
    require_intact,
    use_fast_codecs,
)
from tiling.reader import TileReader
from tiling.stain import create_normalizer
from tiling.store import PART


@dataclass(frozen=True)
class TileStore:
    """A committed slide store's tiling part.

    Attributes
    ----------
    path
        Store location.
    attrs
        Root attributes (slide provenance, tissue outline, parts).
    """

    path: Path
    attrs: dict[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        """The tiling part's record: config, level, mpp requested/actual, counts."""
        return self.attrs["parts"][PART]

    @property
    def slide_id(self) -> str:
        """Slide identity."""
        return self.attrs["slide_id"]

    @property
    def group(self) -> zarr.Group:
        """The store opened read-only with plain ``zarr``."""
        return zarr.open_group(str(self.path), mode="r")

    @property
    def coords(self) -> np.ndarray:
        """``(N, 2)`` level-0 top-left tile coordinates."""
        return self._read("coords")

    def _read(self, path: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """``rows`` of the part's array at ``path``, refusing missing or damaged chunks.

        Raises
        ------
        StoreCorruptError
            If a chunk the read needs is missing, truncated or changed.
        """
        with reading_part(self.path, PART, self.info, keys=[f"{path}/zarr.json"]):
            array = zarr.open_array(str(self.path / path), mode="r")
        rows = slice(None) if rows is None else rows
        with reading_part(self.path, PART, self.info, keys=chunk_keys(array, path, rows)):
            if _local_jpeg(array):
                return _decode_rows(array, rows)
            return _read_rows(array, rows)

    @property
    def has_pixels(self) -> bool:
        """Whether tile pixels are stored (else they are read from the slide)."""
        return "tiles" in self.group

    def __len__(self) -> int:
        return int(self.info["n_tiles"])

    def qc(self) -> pd.DataFrame:
        """One row per tile: ``x``, ``y`` and every QC column, including ``keep``."""
        with reading_part(self.path, PART, self.info):
            names = sorted(self.group["qc"].array_keys())
        coords = self.coords
        frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1]})
        for name in names:
            frame[name] = self._read(f"qc/{name}")
        return frame

    def open_slide(self) -> Slide:
        """Reopen the source slide with the backend and mpp override used for tiling."""
        slide = self.attrs["slide"]
        return open_slide(slide["path"], mpp=slide.get("mpp_override"), slide_id=self.slide_id)

    def read_tiles(self, indices: Iterable[int] | slice, *, stain: Any = None) -> np.ndarray:
        """Tiles by index, from the store or (coordinates-only stores) from the slide.

        Parameters
        ----------
        indices
            Tile indices or a slice.
        stain
            A fitted stain normaliser applied at load time. Coordinates-only
            stores apply the normaliser recorded at tiling time by default.

        Raises
        ------
        StoreCorruptError
            If a shard holding a requested tile is missing, truncated or changed.
        """
        selection = indices if isinstance(indices, slice) else np.asarray(list(indices), np.int64)
        if self.has_pixels:
            tiles = self._read("tiles", selection)
        else:
            tiles = self._read_from_slide(self.coords[selection])
            if stain is None and self.info.get("stain"):
                recorded = self.info["stain"]
                stain = create_normalizer(recorded["name"]).from_dict(recorded["params"])
        return stain.transform(tiles) if stain is not None and len(tiles) else tiles

    def _read_from_slide(self, coords: np.ndarray) -> np.ndarray:
        px = int(self.info["tile_px"])
        out = np.empty((len(coords), px, px, 3), np.uint8)
        if not len(coords):
            return out
        order = np.lexsort((coords[:, 0], coords[:, 1]))  # the reader wants row-major
        with self.open_slide() as slide:
            reader = TileReader(
                slide, level=int(self.info["level"]), read_px=int(self.info["read_px"]), tile_px=px
            )
            for local, tiles in reader.read(coords[order]):
                out[order[local]] = tiles
        return out

    def dask(self) -> da.Array:
        """``(N, H, W, 3)`` uint8 Dask array of the tiles (lazy; one chunk per shard).

        Blocks are read with :meth:`read_tiles`, so a damaged shard raises
        :class:`~slideflow_core.store.StoreCorruptError` when computed.
        """
        n, px = len(self), int(self.info["tile_px"])
        chunk = int(self.info["config"]["shard_tiles"])
        starts = list(range(0, n, chunk))
        blocks = [
            da.from_delayed(
                _delayed_read(self, slice(s, min(s + chunk, n))),
                shape=(min(s + chunk, n) - s, px, px, 3),
                dtype=np.uint8,
            )
            for s in starts
        ]
        return da.concatenate(blocks) if blocks else da.zeros((0, px, px, 3), np.uint8)


def _read_rows(array: zarr.Array, rows: slice | np.ndarray) -> np.ndarray:
    """``array[rows]``, reading each run of consecutive indices as one slice.

    Zarr serves an integer-array selection of a sharded array chunk by chunk:
    32 scattered 224-px tiles took 1.5-6 s that way and 25-35 ms as slices.
    """
    if isinstance(rows, slice):
        return np.asarray(array[rows])
    if not len(rows):
        return np.empty((0, *array.shape[1:]), array.dtype)
    runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)
    return np.concatenate([np.asarray(array[int(r[0]) : int(r[-1]) + 1]) for r in runs])


def _local_jpeg(array: zarr.Array) -> bool:
    """A local array of JPEG tiles, one per chunk, which :func:`_decode_rows` reads."""
    inner = getattr(array.metadata.codecs[0], "codecs", ())  # type: ignore[union-attr]
    return bool(inner) and isinstance(inner[0], JpegCodec) and rows_readable(array)


def _decode_rows(array: zarr.Array, rows: slice | np.ndarray) -> np.ndarray:
    """``array[rows]`` of a local JPEG tile array, its chunks decoded here.

    The same bytes and the same decoder as Zarr's pipeline (:class:`JpegCodec`),
    without its per-chunk Python: reading a 256-px tile cost twice its decode
    that way. Checksums are checked as Zarr checks them.
    """
    indices = np.arange(*rows.indices(array.shape[0])) if isinstance(rows, slice) else rows
    out = np.empty((len(indices), *array.shape[1:]), np.uint8)
    for i, chunk in enumerate(read_encoded_chunks(array, np.asarray(indices, np.int64))):
        out[i] = decode_jpeg(chunk).reshape(array.shape[1:])
    return out


def _delayed_read(store: TileStore, window: slice) -> Any:
    import dask

    return dask.delayed(store.read_tiles)(window)


def open_store(path: str | os.PathLike[str]) -> TileStore:
    """Open a committed slide store that has a complete tiling part.

    Raises
    ------
    StoreError
        If there is no store, it is incomplete, or it has no tiling part.
    StoreCorruptError
        If a file the tiling part wrote is missing or of the wrong size (one
        ``stat`` per file), or the root metadata is unreadable.
    """
    use_fast_codecs()
    path = Path(path)
    attrs = read_store_attrs(path)
    info = attrs.get("parts", {}).get(PART, {})
    if not info.get("complete"):
        raise StoreError(f"{path} has no complete tiling part", hint="run tiling on this slide")
    require_intact(path, PART, info)
    return TileStore(path, attrs)


@dataclass(frozen=True)
class CohortTiles:
    """Tiles of many slides: one Dask array and a table saying where each row came from.

    Attributes
    ----------
    tiles
        ``(N, H, W, 3)`` uint8 Dask array (all slides concatenated, same tile size).
    table
        One row per tile: ``slide_id``, ``tile`` (index in its store), ``x``, ``y``
        and the QC columns.
    stores
        The stores, in order.
    """

    tiles: da.Array
    table: pd.DataFrame
    stores: tuple[TileStore, ...]


def open_cohort(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    keep_only: bool = False,
) -> CohortTiles:
    """Open every tile store of a project (``<project>/stores/*.zarr``) or a list of stores.

    Parameters
    ----------
    source
        A project directory, or store paths.
    keep_only
        Only tiles whose QC ``keep`` flag is set.

    Raises
    ------
    StoreError
        If no store is found, or stores disagree on tile size.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        paths = sorted((root / "stores").glob("*.zarr")) if (root / "stores").is_dir() else [root]
    else:
        paths = [Path(p) for p in source]
    stores = tuple(open_store(p) for p in paths)
    if not stores:
        raise StoreError(f"no tile stores found in {source}", hint="run `sfc tile` first")
    sizes = {int(s.info["tile_px"]) for s in stores}
    if len(sizes) > 1:
        raise StoreError(f"stores have different tile sizes {sorted(sizes)}; open them separately")
    arrays, tables = [], []
    for store in stores:
        frame = store.qc()
        frame.insert(0, "tile", np.arange(len(frame)))
        frame.insert(0, "slide_id", store.slide_id)
        array = store.dask()
        if keep_only:
            mask = frame["keep"].to_numpy()
            array = array[np.flatnonzero(mask)]
            frame = frame[mask]
        arrays.append(array)
        tables.append(frame)
    return CohortTiles(
        tiles=da.concatenate(arrays),
        table=pd.concat(tables, ignore_index=True),
        stores=stores,
    )
