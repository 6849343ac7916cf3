"""Embedding one slide store into its ``features/<name>`` part: the per-slide work.

:class:`embedders.stage.EmbedStage` chooses a slide's tiles and identity
(:func:`select_tiles`, :func:`feature_identity`) and writes them with
:func:`write_slide_features`: loader threads feed the model, every batch's
features are checked finite, and rows are written whole chunks at a time
through :func:`slideflow_core.features.write_features`, which commits the part
only when every row is in.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from embedders.config import EmbedConfig, TileSelection
from embedders.loader import Batch, iter_batches
from slideflow_core.errors import SlideflowError
from slideflow_core.features import FeatureWriter, features_part, write_features
from slideflow_core.provenance import run_context
from slideflow_core.repair import config_record
from tiling.view import TileStore

#: Batch size on CPU when none is given and the embedder does not say its own
#: (``Embedder.cpu_batch_size``: 16 for networks, 64 for the handcrafted embedder).
CPU_BATCH_SIZE = 16
#: Largest batch chosen automatically on a GPU.
MAX_GPU_BATCH_SIZE = 1024
#: Fraction of the GPU's free memory a batch's activations may use.
GPU_MEMORY_FRACTION = 0.5

_UNSAFE_PART_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class FeatureValueError(SlideflowError):
    """An embedder gave features that cannot be stored (NaN, infinite, or beyond float16)."""


def feature_name(model_id: str) -> str:
    """The store part name for an embedder id (``timm:vit_small…`` → ``timm_vit_small…``)."""
    name = _UNSAFE_PART_CHARS.sub("_", model_id).strip("._-")
    if not name:
        raise ValueError(f"embedder id {model_id!r} gives no usable part name; pass name=")
    return name


def select_tiles(store: TileStore, tiles: TileSelection = "keep") -> np.ndarray:
    """Rows of the tiling part to embed: those passing QC (``"keep"``) or ``"all"``."""
    if tiles == "all":
        return np.arange(len(store), dtype=np.int64)
    if tiles == "keep":
        return np.flatnonzero(np.asarray(store.group["qc"]["keep"][:], bool)).astype(np.int64)
    raise ValueError(f"tiles must be 'keep' or 'all', got {tiles!r}")


def tiles_identity(
    store: TileStore, tiles: TileSelection, tile_index: np.ndarray, dtype: str
) -> dict[str, Any]:
    """The part of a feature identity known without the model: which tiles, stored how."""
    return {
        "tiling": store.info.get("identity"),
        "tiles": tiles,
        "n_tiles": len(tile_index),
        "tile_index_sha256": hashlib.sha256(np.ascontiguousarray(tile_index).data).hexdigest(),
        "dtype": dtype,
    }


def feature_identity(
    embedder: Any, store: TileStore, tiles: TileSelection, tile_index: np.ndarray, dtype: str
) -> dict[str, Any]:
    """What makes two feature parts interchangeable: model, tiles and how they were chosen."""
    return {"embedder": embedder.identity(), **tiles_identity(store, tiles, tile_index, dtype)}


def embed_request(config: EmbedConfig) -> dict[str, Any] | None:
    """What a run asked for, known before any model is built (JSON-ready), or None.

    Recorded in every feature part, so a resumed run can tell that a slide is
    done without building its model: the registered name, the weights as given
    (with the SHA-256 of the file when they are a local file), the model options,
    the tile selection and the stored dtype. ``None`` for a factory model: only
    the built model can say what it is.
    """
    if not isinstance(config.model, str):
        return None
    weights, sha256 = config.weights, None
    if weights is not None and Path(weights).expanduser().is_file():
        from embedders.weights import sha256_file  # imports torch: only when there is a file

        sha256 = sha256_file(Path(weights).expanduser())
    request = {
        "model": config.model,
        "weights": weights,
        "weights_sha256": sha256,
        "model_options": config.model_options,
        "tiles": config.tiles,
        "dtype": config.dtype,
    }
    return json.loads(json.dumps(request, sort_keys=True, default=str))


def _device_type(embedder: Any) -> str:
    return str(embedder.device).split(":")[0]


def auto_batch_size(embedder: Any) -> int:
    """The batch size used when none is given.

    CPU: the embedder's ``cpu_batch_size`` (:data:`CPU_BATCH_SIZE` for a model that
    does not say). CUDA: one probe batch of 8 measures the peak
    memory a tile needs; the batch is the largest power of two whose tiles fit
    in :data:`GPU_MEMORY_FRACTION` of the free memory, at most
    :data:`MAX_GPU_BATCH_SIZE`.
    """
    if _device_type(embedder) != "cuda":
        return int(getattr(embedder, "cpu_batch_size", CPU_BATCH_SIZE))
    import torch

    device = torch.device(embedder.device)
    probe = 8
    px = int(embedder.input_px)
    tiles = embedder.preprocess(np.full((probe, px, px, 3), 200, np.uint8))
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    embedder.forward(tiles.to(device))
    torch.cuda.synchronize(device)
    per_tile = max(1, (torch.cuda.max_memory_allocated(device) - base) // probe)
    free, _ = torch.cuda.mem_get_info(device)
    fit = int(free * GPU_MEMORY_FRACTION // per_tile)
    return int(min(MAX_GPU_BATCH_SIZE, 2 ** max(0, fit.bit_length() - 1)))


class _ChunkedRows:
    """Collects feature rows in order and writes them whole stored chunks at a time."""

    def __init__(self, writer: FeatureWriter) -> None:
        self._writer = writer
        self._rows = writer.chunk_rows
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._next = 0

    def add(self, values: np.ndarray) -> None:
        self._parts.append(values)
        self._pending += len(values)
        if self._pending >= self._rows:
            block = np.concatenate(self._parts)
            whole = len(block) // self._rows * self._rows
            self._writer.put(self._next, block[:whole])
            self._next += whole
            self._parts = [block[whole:]]
            self._pending = len(block) - whole

    def flush(self) -> None:
        if self._pending:
            self._writer.put(self._next, np.concatenate(self._parts))
            self._next += self._pending
        self._parts, self._pending = [], 0


def _weights_source(embedder: Any, config: EmbedConfig) -> str:
    """Where the embedder's weights came from, for messages."""
    record = getattr(embedder, "weights", None)
    if isinstance(record, dict) and record.get("source"):
        return str(record.get("file") or record["source"])
    return config.weights or "none given"


def check_finite(
    values: np.ndarray, batch: Batch, embedder: Any, config: EmbedConfig
) -> np.ndarray:
    """``values`` (float32 rows of ``batch``) if every one is finite once stored, else raise.

    Raises
    ------
    FeatureValueError
        Naming the model, its weights, the first bad tile, and the fix.
    """
    with np.errstate(over="ignore"):  # an overflow is reported below, with its fix
        stored = values.astype(config.dtype, copy=False)
    bad = ~np.isfinite(stored).all(axis=1)
    if not bad.any():
        return values
    first = int(batch.tile_index[np.flatnonzero(bad)[0]])
    overflow = bool(np.isfinite(values[bad]).all())
    what = f"beyond the {config.dtype} range" if overflow else "NaN or infinite"
    hint = (
        "store them as float32 (dtype='float32', --dtype float32)"
        if overflow
        else "check the weights (a corrupt or mismatched file), and the model's precision "
        "(model_options={'precision': 'fp32'})"
    )
    raise FeatureValueError(
        f"{embedder.id} with weights {_weights_source(embedder, config)} gave {what} features "
        f"for {int(bad.sum())} of {len(values)} tiles of a batch (first: tile {first})",
        hint=hint,
    )


def _forward_all(
    embedder: Any,
    batches: Iterator[Batch],
    rows: _ChunkedRows,
    config: EmbedConfig,
    progress: Callable[[int], None],
) -> float:
    """Run the model over ``batches`` into ``rows``; returns seconds spent waiting for tiles."""
    cuda = _device_type(embedder) == "cuda"
    waited, done = 0.0, 0
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - asked
        if batch is None:
            break
        inputs = batch.tiles.to(embedder.device, non_blocking=True) if cuda else batch.tiles
        values = np.asarray(embedder.forward(inputs), dtype=np.float32)
        rows.add(check_finite(values, batch, embedder, config))
        done += len(batch.tile_index)
        progress(done)
    rows.flush()
    return waited


def write_slide_features(
    store: TileStore,
    embedder: Any,
    config: EmbedConfig,
    *,
    part: str,
    tile_index: np.ndarray,
    identity: dict[str, Any],
    progress: Callable[[int], None],
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed ``store``'s tiles ``tile_index`` into its part ``features/<part>``, atomically.

    ``request`` (:func:`embed_request`) is recorded with the part when given.

    Returns
    -------
    dict
        What the slide's outcome reports: part, tiles/s, loader wait, batch size,
        device and where the pixels came from.

    Raises
    ------
    FeatureValueError
        If the model gives non-finite features (the part is then left missing).
    """
    started = time.time()
    size = config.batch_size or auto_batch_size(embedder)
    cuda = _device_type(embedder) == "cuda"
    info = {
        "identity": identity,
        "config": config_record(config),  # what sfc verify --repair redoes the part with
        "request": request,  # what a resumed run compares before building any model
        "model": embedder.id,
        "tiles": config.tiles,
        "batch_size": size,
        "device": str(embedder.device),
        "pixels": "stored" if store.has_pixels else "read from the slide",
        **run_context(),
    }
    batches = iter_batches(
        store,
        tile_index,
        embedder.preprocess,
        batch_size=size,
        threads=config.loader_threads,
        prefetch=config.prefetch,
        pin_memory=cuda,
    )
    with (
        write_features(
            store.path,
            part,
            tile_index=tile_index,
            coords=store.coords[tile_index],
            dim=int(embedder.dim),
            info=info,
            dtype=config.dtype,
        ) as writer,
        closing(batches),  # on an error, queued loads are cancelled at once
    ):
        waited = _forward_all(embedder, batches, _ChunkedRows(writer), config, progress)
    seconds = time.time() - started
    return {
        "part": features_part(part),
        "tiles_per_s": len(tile_index) / seconds if seconds > 0 else 0.0,
        "loader_wait_s": round(waited, 3),
        "batch_size": size,
        "device": str(embedder.device),
        "pixels": info["pixels"],
    }
