"""Feature and attention parts of a slide store: the hand-off between stages.

Embedders write ``features/<model>``; MIL reads it as a bag and writes
``attention/<run>``; exporters and viewers read both. The layout is plain Zarr,
so any tool can read it::

    <slide_id>.zarr/
      features/<model>/
        features     (M, D) float16 or float32, rows in tile order
        tile_index   (M,)   int64   row of each feature in the tiling part's ``coords``
        coords       (M, 2) int64   level-0 top-left x, y of each tile (copied for readers)
      attention/<run>/
        scores       (M,) or (M, K) float32, one row per feature row
        tile_index   (M,)   int64
        coords       (M, 2) int64

Each part is written with :func:`slideflow_core.store.write_part`, so it is
atomic and carries its identity (model, weights, tiling identity) in the
store's root attributes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from slideflow_core.store import (
    StoreError,
    default_codecs,
    part_key,
    read_store_attrs,
    reading_part,
    use_fast_codecs,
    write_part,
)
from slideflow_core.zarr_metadata import (
    ATTENTION_DIMS,
    FEATURE_DIMS,
    describe_arrays,
    scores_dims,
    store_grid_attrs,
)

FEATURES = "features"
ATTENTION = "attention"
_CHUNK_BYTES = 1 << 21


def features_part(model_id: str) -> str:
    """The store part holding the features of ``model_id`` (``features/<model_id>``)."""
    return part_key(FEATURES, model_id)


def attention_part(run: str) -> str:
    """The store part holding the attention of MIL run ``run`` (``attention/<run>``)."""
    return part_key(ATTENTION, run)


def _rows_per_chunk(dim: int, itemsize: int, n: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(1, dim * itemsize)))


class FeatureWriter:
    """Writes rows of one feature part; made by :func:`write_features`."""

    def __init__(self, group: zarr.Group, n: int, dim: int, dtype: str) -> None:
        self._array = group.create_array(
            "features",
            shape=(n, dim),
            dtype=dtype,
            chunks=(_rows_per_chunk(dim, np.dtype(dtype).itemsize, n), dim),
            compressors=default_codecs(),
            dimension_names=FEATURE_DIMS["features"],
        )
        self._written = np.zeros(n, dtype=bool)

    def put(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` (rows × D) at feature rows ``start``, ``start + 1``, …."""
        values = np.asarray(values)
        stop = start + len(values)
        if start < 0 or stop > len(self._written) or values.shape[1:] != self._array.shape[1:]:
            raise ValueError(
                f"rows {start}:{stop} of shape {values.shape[1:]} do not fit "
                f"features of shape {self._array.shape}"
            )
        self._array[start:stop] = values.astype(self._array.dtype, copy=False)
        self._written[start:stop] = True

    @property
    def chunk_rows(self) -> int:
        """Rows per stored chunk; writing whole chunks never rewrites a chunk."""
        return int(self._array.chunks[0])

    @property
    def missing(self) -> int:
        """Rows not written yet."""
        return int((~self._written).sum())


@contextmanager
def write_features(
    store: str | os.PathLike[str],
    model_id: str,
    *,
    tile_index: np.ndarray,
    coords: np.ndarray,
    dim: int,
    info: dict[str, Any],
    dtype: str = "float16",
) -> Iterator[FeatureWriter]:
    """Write the ``features/<model_id>`` part of a slide store, atomically.

    Parameters
    ----------
    store
        A committed slide store (from tiling).
    model_id
        Name of the part (the embedder's id, e.g. ``"uni"``).
    tile_index, coords
        Which tiles are embedded (rows of the tiling part) and their level-0
        coordinates, one per feature row.
    dim
        Feature dimension D.
    info
        Recorded as the part's description; include ``identity`` (what makes
        two runs interchangeable) so a rerun can skip complete slides.
    dtype
        ``"float16"`` (default; half the disk, ample precision for features) or
        ``"float32"``.

    Yields
    ------
    FeatureWriter
        Call ``put(start, rows)`` until every row is written; leaving the block
        with rows missing raises and leaves the part missing.
    """
    tile_index = np.asarray(tile_index, dtype=np.int64)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if len(tile_index) != len(coords):
        raise ValueError(f"{len(tile_index)} tile indices but {len(coords)} coordinates")
    n = len(tile_index)
    record = {**info, "n": n, "dim": int(dim), "dtype": dtype, "coordinate_space": "level0_px"}
    with write_part(store, features_part(model_id), record) as group:
        chunk = (_rows_per_chunk(2, 8, n),)
        codecs = default_codecs()
        group.create_array(
            "tile_index",
            data=tile_index,
            chunks=chunk,
            compressors=codecs,
            dimension_names=FEATURE_DIMS["tile_index"],
        )
        group.create_array(
            "coords",
            data=coords,
            chunks=(chunk[0], 2),
            compressors=codecs,
            dimension_names=FEATURE_DIMS["coords"],
        )
        group.attrs.update(record)
        writer = FeatureWriter(group, n, int(dim), dtype)
        yield writer
        if writer.missing:
            raise StoreError(
                f"features/{model_id} of {store}: {writer.missing} of {n} rows were not written"
            )
        describe_arrays(group, {**store_grid_attrs(read_store_attrs(store)), "model": model_id})


@dataclass(frozen=True)
class FeatureBag:
    """One slide's features for one model, ready for MIL.

    Attributes
    ----------
    slide_id
        The slide.
    model_id
        The feature part it came from.
    features
        (M, D) float32.
    coords
        (M, 2) int64 level-0 top-left of each tile.
    tile_index
        (M,) rows of the tiling part.
    info
        The part's recorded description (model, weights, tiling identity, …).
    """

    slide_id: str
    model_id: str
    features: np.ndarray
    coords: np.ndarray
    tile_index: np.ndarray
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.features)


def _complete_part(store: Path, part: str, what: str) -> dict[str, Any]:
    attrs = read_store_attrs(store)
    info = attrs.get("parts", {}).get(part)
    if not info or not info.get("complete"):
        have = sorted(p for p in attrs.get("parts", {}) if p.startswith(part.split("/")[0] + "/"))
        raise StoreError(
            f"{store} has no complete {part}",
            hint=f"{what}; complete parts here: {', '.join(have) or 'none'}",
        )
    return info


def feature_info(store: str | os.PathLike[str], model_id: str) -> dict[str, Any]:
    """The recorded description of a complete ``features/<model_id>`` part.

    Raises
    ------
    StoreError
        If the store has no complete part of that name (the message lists what it has).
    """
    return _complete_part(
        Path(store), features_part(model_id), f"embed the slide first (sfc embed … {model_id})"
    )


def read_features(
    store: str | os.PathLike[str], model_id: str, *, rows: slice | np.ndarray | None = None
) -> FeatureBag:
    """Load one slide's features (all rows, or ``rows``) as float32.

    Raises
    ------
    StoreError
        If the part is missing or incomplete.
    StoreCorruptError
        If a file of the part is missing, truncated or changed (it names the file).
    """
    use_fast_codecs()
    store = Path(store)
    info = feature_info(store, model_id)
    select = slice(None) if rows is None else rows
    with reading_part(store, features_part(model_id), info):
        group = zarr.open_group(str(store / FEATURES / model_id), mode="r")
        features = np.asarray(group["features"].oindex[select], dtype=np.float32)
        coords = np.asarray(group["coords"].oindex[select])
        tile_index = np.asarray(group["tile_index"].oindex[select])
    attrs = read_store_attrs(store)
    return FeatureBag(
        slide_id=str(attrs.get("slide_id", store.stem)),
        model_id=model_id,
        features=features,
        coords=coords,
        tile_index=tile_index,
        info=info,
    )


def list_parts(store: str | os.PathLike[str], kind: str = FEATURES) -> dict[str, dict[str, Any]]:
    """Complete parts of one kind (``"features"`` or ``"attention"``), by name."""
    attrs = read_store_attrs(store)
    prefix = kind + "/"
    return {
        name[len(prefix) :]: info
        for name, info in attrs.get("parts", {}).items()
        if name.startswith(prefix) and info.get("complete")
    }


def write_attention(
    store: str | os.PathLike[str],
    run: str,
    scores: np.ndarray,
    *,
    model_id: str,
    info: dict[str, Any],
) -> None:
    """Write per-tile scores of MIL run ``run``, aligned with ``features/<model_id>``.

    Parameters
    ----------
    store
        The slide store.
    run
        Run name (the part becomes ``attention/<run>``).
    scores
        (M,) or (M, K) float, one row per feature row of ``model_id``.
    model_id
        The feature part the scores belong to.
    info
        Recorded description (head, class names of the K columns, …).
    """
    use_fast_codecs()
    store = Path(store)
    features = feature_info(store, model_id)
    with reading_part(store, features_part(model_id), features):
        source = zarr.open_group(str(store / FEATURES / model_id), mode="r")
        tile_index = np.asarray(source["tile_index"][:])
        coords = np.asarray(source["coords"][:])
    scores = np.asarray(scores, dtype=np.float32)
    n = len(tile_index)
    if scores.shape[0] != n:
        raise ValueError(f"{len(scores)} scores for {n} feature rows of {model_id} in {store}")
    record = {**info, "model_id": model_id, "n": n, "coordinate_space": "level0_px"}
    codecs = default_codecs()
    grid = {**store_grid_attrs(read_store_attrs(store)), "model": model_id, "run": run}
    with write_part(store, attention_part(run), record) as group:
        dims = {**ATTENTION_DIMS, "scores": scores_dims(scores.ndim)}
        for name, values in (("scores", scores), ("tile_index", tile_index), ("coords", coords)):
            group.create_array(name, data=values, compressors=codecs, dimension_names=dims[name])
        group.attrs.update(record)
        describe_arrays(group, grid)


@dataclass(frozen=True)
class AttentionMap:
    """Per-tile scores of one MIL run on one slide (see :func:`read_attention`)."""

    run: str
    scores: np.ndarray
    coords: np.ndarray
    tile_index: np.ndarray
    info: dict[str, Any]


def read_attention(store: str | os.PathLike[str], run: str) -> AttentionMap:
    """Load the ``attention/<run>`` part of a slide store.

    Raises
    ------
    StoreError
        If the part is missing or incomplete.
    StoreCorruptError
        If a file of the part is missing, truncated or changed (it names the file).
    """
    use_fast_codecs()
    store = Path(store)
    part = attention_part(run)
    info = _complete_part(store, part, "run the MIL experiment first")
    with reading_part(store, part, info):
        group = zarr.open_group(str(store / ATTENTION / run), mode="r")
        scores = np.asarray(group["scores"][:])
        coords = np.asarray(group["coords"][:])
        tile_index = np.asarray(group["tile_index"][:])
    return AttentionMap(run=run, scores=scores, coords=coords, tile_index=tile_index, info=info)
