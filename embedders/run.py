"""Embedding tile stores into ``features/<model>`` parts: one slide here, a cohort on Ray.

:func:`embed_slide` embeds one store in this process (loader threads feed the
model, rows are written whole chunks at a time through
:func:`slideflow_core.features.write_features`). :func:`embed_cohort` runs it
for every store of a project in embedder actors (:mod:`embedders.actors`),
keeping one slide in flight per actor, so the driver's memory does not grow
with the cohort; every slide ends ``done``, ``skipped`` (a complete part with
the same identity exists) or ``failed`` with its error, and the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from embedders.actors import ActorPool, EmbedderSpec, plan_actors
from embedders.loader import Batch, iter_batches
from embedders.registry import get_card
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.errors import SlideflowError, failure_text
from slideflow_core.features import FeatureWriter, features_part, write_features
from slideflow_core.provenance import run_context
from slideflow_core.ray_runtime import ensure_ray
from slideflow_core.store import StoreError, part_state, read_store_attrs
from tiling.view import TileStore, open_store

TileSelection = Literal["keep", "all"]

#: Batch size on CPU when none is given: in benchmarks/embedding.py (2 cores) the
#: forward-only rate of ViT-S/14 and of the handcrafted embedder was best at 64
#: of 16/32/64 in every run; the loader then holds 4 batches (~40 MB for a ViT).
CPU_BATCH_SIZE = 64
#: Largest batch chosen automatically on a GPU.
MAX_GPU_BATCH_SIZE = 1024
#: Fraction of the GPU's free memory a batch's activations may use.
GPU_MEMORY_FRACTION = 0.5

_UNSAFE_PART_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EmbedResult:
    """Outcome of embedding one slide (one row of the cohort report)."""

    slide_id: str
    status: str  # "done", "skipped" or "failed"
    store: str
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


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


def feature_identity(
    embedder: Any, store: TileStore, tiles: TileSelection, tile_index: np.ndarray, dtype: str
) -> dict[str, Any]:
    """What makes two feature parts interchangeable: model, tiles and how they were chosen."""
    return {
        "embedder": embedder.identity(),
        "tiling": store.info.get("identity"),
        "tiles": tiles,
        "n_tiles": len(tile_index),
        "tile_index_sha256": hashlib.sha256(np.ascontiguousarray(tile_index).data).hexdigest(),
        "dtype": dtype,
    }


def _device_type(embedder: Any) -> str:
    return str(embedder.device).split(":")[0]


def auto_batch_size(embedder: Any) -> int:
    """The batch size used when none is given.

    CPU: :data:`CPU_BATCH_SIZE`. CUDA: one probe batch of 8 measures the peak
    memory a tile needs; the batch is the largest power of two whose tiles fit
    in :data:`GPU_MEMORY_FRACTION` of the free memory, at most
    :data:`MAX_GPU_BATCH_SIZE`.
    """
    if _device_type(embedder) != "cuda":
        return CPU_BATCH_SIZE
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


def embed_slide(
    store: str | os.PathLike[str],
    embedder: Any,
    *,
    tiles: TileSelection = "keep",
    batch_size: int | None = None,
    name: str | None = None,
    dtype: str = "float16",
    overwrite: bool = False,
    loader_threads: int = 2,
    prefetch: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EmbedResult:
    """Embed one slide store's tiles into its ``features/<name>`` part, in this process.

    Parameters
    ----------
    store
        A committed slide store with a tiling part (pixels or coordinates only).
    embedder
        An embedder (``embedders.create(...)``).
    tiles
        ``"keep"`` (tiles passing QC, the default) or ``"all"``.
    batch_size
        Tiles per forward pass (default: :func:`auto_batch_size`).
    name
        Part name (default: the embedder's id made safe, see :func:`feature_name`).
    dtype
        Stored precision: ``"float16"`` (default) or ``"float32"``.
    overwrite
        Re-embed even when a complete part exists (compatible or not).
    loader_threads
        Threads reading and preprocessing tiles ahead of the model.
    prefetch
        Batches loaded ahead of the model (default ``2 * loader_threads``).
    progress
        Called with the number of tiles embedded so far after every batch.

    Returns
    -------
    EmbedResult
        ``done`` or ``skipped``; errors raise (:func:`embed_cohort` collects them).

    Raises
    ------
    StoreError
        If the store has no tiling part, or a complete part made with another
        identity exists and ``overwrite`` is False.
    """
    started = time.time()
    tile_store = open_store(store)
    part = name or feature_name(embedder.id)
    tile_index = select_tiles(tile_store, tiles)
    identity = feature_identity(embedder, tile_store, tiles, tile_index, dtype)
    state = part_state(tile_store.path, features_part(part), identity)
    result = {"slide_id": tile_store.slide_id, "store": str(tile_store.path)}
    if state == "complete" and not overwrite:
        return EmbedResult(**result, status="skipped", n_tiles=len(tile_index))
    if state == "incompatible" and not overwrite:
        raise StoreError(
            f"{tile_store.path} already has features/{part} made differently "
            "(another model, weights, tiling, tile selection or dtype)",
            hint="pass overwrite=True (--overwrite) to replace them, or name= (--name) "
            "to keep both",
        )
    size = batch_size or auto_batch_size(embedder)
    cuda = _device_type(embedder) == "cuda"
    info = {
        "identity": identity,
        "model": embedder.id,
        "tiles": tiles,
        "batch_size": size,
        "device": str(embedder.device),
        "pixels": "stored" if tile_store.has_pixels else "read from the slide",
        **run_context(),
    }
    batches = iter_batches(
        tile_store,
        tile_index,
        embedder.preprocess,
        batch_size=size,
        threads=loader_threads,
        prefetch=prefetch,
        pin_memory=cuda,
    )
    with (
        write_features(
            tile_store.path,
            part,
            tile_index=tile_index,
            coords=tile_store.coords[tile_index],
            dim=int(embedder.dim),
            info=info,
            dtype=dtype,
        ) as writer,
        closing(batches),  # on an error, queued loads are cancelled at once
    ):
        waited = _forward_all(embedder, batches, _ChunkedRows(writer), progress)
    seconds = time.time() - started
    return EmbedResult(
        **result,
        status="done",
        n_tiles=len(tile_index),
        seconds=seconds,
        details={
            "part": features_part(part),
            "tiles_per_s": len(tile_index) / seconds if seconds > 0 else 0.0,
            "loader_wait_s": round(waited, 3),
            "batch_size": size,
            "device": str(embedder.device),
            "pixels": info["pixels"],
        },
    )


def _forward_all(
    embedder: Any,
    batches: Iterator[Batch],
    rows: _ChunkedRows,
    progress: Callable[[int], None] | None,
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
        rows.add(np.asarray(embedder.forward(inputs), dtype=np.float32))
        done += len(batch.tile_index)
        if progress is not None:
            progress(done)
    rows.flush()
    return waited


def _embed_or_fail(store: str, embedder: Any, **options: Any) -> EmbedResult:
    """:func:`embed_slide` for the actors: a failure becomes a ``failed`` result."""
    started = time.time()
    try:
        return embed_slide(store, embedder, **options)
    except Exception as exc:
        return _failed(store, exc, started)


def _failed(store: str | Path, exc: BaseException, started: float) -> EmbedResult:
    return EmbedResult(
        slide_id=Path(store).name.removesuffix(".zarr"),
        status="failed",
        store=str(store),
        seconds=time.time() - started,
        error=failure_text(exc),
        hint=getattr(exc, "hint", None),
    )


@dataclass(frozen=True)
class EmbeddingReport:
    """Per-slide outcomes of embedding a cohort, with totals.

    Attributes
    ----------
    results
        One :class:`EmbedResult` per slide, in cohort order.
    seconds
        Wall time of the whole run (actor start-up included).
    project
        The project directory.
    part
        The feature part written (``features/<name>``).
    embedder
        What the actors held: id, dim, device, identity.
    actors
        How many actors ran, and on what.
    startup_seconds
        Of ``seconds``, the time until the first actor held its model.
    """

    results: tuple[EmbedResult, ...]
    seconds: float
    project: str
    part: str
    embedder: dict[str, Any]
    actors: str
    startup_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed

    @property
    def failed(self) -> list[EmbedResult]:
        """Results of the slides that failed."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def tiles_embedded(self) -> int:
        """Tiles embedded in this run (skipped slides not counted)."""
        return sum(r.n_tiles for r in self.results if r.status == "done")

    @property
    def tiles_per_s(self) -> float:
        """Tiles embedded per second of wall time, start-up included."""
        return self.tiles_embedded / self.seconds if self.seconds > 0 else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row per slide: id, status, tiles, seconds, tiles/s, error, hint, store."""
        rows = []
        for r in self.results:
            row = {k: v for k, v in asdict(r).items() if k != "details"}
            row["tiles_per_s"] = r.details.get("tiles_per_s", 0.0)
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written beside the status files)."""
        return {
            "project": self.project,
            "part": self.part,
            "embedder": self.embedder,
            "actors": self.actors,
            "seconds": self.seconds,
            "startup_seconds": self.startup_seconds,
            "tiles_embedded": self.tiles_embedded,
            "tiles_per_s": self.tiles_per_s,
            "results": [asdict(r) for r in self.results],
        }

    def __str__(self) -> str:
        frame = self.to_frame()
        if not len(frame):
            return f"(no slides) {self.part}"
        table = frame[["slide_id", "status", "n_tiles", "seconds", "tiles_per_s"]].copy()
        table["seconds"] = table["seconds"].map(lambda v: f"{v:.1f}")
        table["tiles_per_s"] = table["tiles_per_s"].map(lambda v: f"{v:.0f}" if v else "")
        counts = frame["status"].value_counts().to_dict()
        lines = [table.to_string(index=False)]
        lines += [f"  {r.slide_id}: {r.error}" for r in self.failed]
        lines.append(
            f"{len(frame)} slides: "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"; {self.tiles_embedded} tiles embedded into {self.part} in "
            f"{self.seconds:.1f}s ({self.tiles_per_s:.0f} tiles/s; {self.actors}, "
            f"{self.startup_seconds:.1f}s to start)"
        )
        return "\n".join(lines)


def _stores(
    layout: ProjectLayout, cohort: Cohort | str | os.PathLike[str] | Iterable[str] | None
) -> tuple[list[str], list[tuple[str, Path]], list[EmbedResult]]:
    """Slide ids in order, ``(slide_id, store)`` pairs to embed, failures for missing stores.

    Without a cohort, every store of the project, by name.
    """
    if cohort is None:
        paths = sorted(p for p in layout.stores_dir.glob("*.zarr") if p.is_dir())
        ids = [p.name.removesuffix(".zarr") for p in paths]
        return ids, list(zip(ids, paths, strict=True)), []
    if isinstance(cohort, (str, os.PathLike)):
        cohort = Cohort.from_manifest(cohort)
    ids = list(cohort.slide_ids if isinstance(cohort, Cohort) else cohort)
    found, missing = [], []
    for slide_id in ids:
        try:
            path = layout.store(slide_id)
        except ValueError as exc:
            missing.append(_failed(slide_id, exc, time.time()))
            continue
        if path.is_dir():
            found.append((slide_id, path))
        else:
            error = StoreError(f"{slide_id} has no tile store at {path}", hint="run `sfc tile`")
            missing.append(_failed(path, error, time.time()))
    return ids, found, missing


def _expected_tiles(store: Path, tiles: TileSelection) -> int:
    try:
        info = read_store_attrs(store).get("parts", {}).get("tiling", {})
    except StoreError:
        return 0
    return int(info.get("n_kept" if tiles == "keep" else "n_tiles", 0))


def _cause(exc: BaseException, what: str) -> SlideflowError:
    """Our error behind a Ray error, or a :class:`SlideflowError` saying ``what`` happened."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, SlideflowError):
        return cause
    text = str(cause or exc).strip().splitlines()
    return SlideflowError(
        f"{what}: " + (text[-1] if text else type(exc).__name__),
        hint="check the model with embedders.create(...) in Python; see the Ray logs",
    )


def embed_cohort(
    project: str | os.PathLike[str],
    model: str | Callable[[], Any],
    *,
    weights: str | None = None,
    cohort: Cohort | str | os.PathLike[str] | Iterable[str] | None = None,
    tiles: TileSelection = "keep",
    batch_size: int | None = None,
    device: str = "auto",
    num_actors: int | None = None,
    overwrite: bool = False,
    name: str | None = None,
    dtype: str = "float16",
    loader_threads: int = 2,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    max_restarts: int = 3,
    max_task_retries: int = 2,
    model_options: dict[str, Any] | None = None,
) -> EmbeddingReport:
    """Embed every tile store of a project into ``features/<model>`` with Ray actors.

    Parameters
    ----------
    project
        Project directory holding ``stores/<slide_id>.zarr`` (from ``tiling.tile_cohort``).
    model
        A registered embedder name (``"handcrafted"``, ``"uni"``, any ``timm:`` name),
        or a picklable zero-argument factory returning an embedder.
    weights
        Local weights file or Hugging Face id for a registered name.
    cohort
        Only these slides: a :class:`~slideflow_core.cohort.Cohort`, a manifest
        path, or slide ids (default: every store of the project).
    tiles
        ``"keep"`` (tiles passing QC) or ``"all"``.
    batch_size
        Tiles per forward pass (default: chosen per actor, :func:`auto_batch_size`).
    device
        ``"auto"`` (GPUs when the cluster has them), ``"cpu"`` or ``"cuda"``.
    num_actors
        Embedder actors (default: one per GPU; on CPU
        :data:`embedders.actors.DEFAULT_CPU_ACTORS` sharing the cores).
    overwrite
        Re-embed slides that already have a complete part.
    name
        Feature part name (default: the embedder's id); lets two weights of one
        model coexist.
    dtype
        Stored precision, ``"float16"`` (default) or ``"float32"``.
    loader_threads
        Threads per actor reading and preprocessing tiles ahead of the model.
    address
        Ray cluster address; ``None`` starts (or reuses) a local Ray instance.
    num_cpus
        Cores of a local Ray instance (default: all).
    progress
        Show a progress bar (tiles, tiles/s, slides).
    max_restarts, max_task_retries
        Restarts of a dead actor, and retries of the slide it was embedding.
    model_options
        Extra keyword arguments for ``embedders.create``.

    Returns
    -------
    EmbeddingReport
        Per-slide outcomes; also written to ``<project>/status/embed-<name>.json``
        and per slide to ``<project>/status/embed-<name>/<slide_id>.json``.

    Raises
    ------
    SlideflowError
        If the project has no stores folder, or the embedder cannot be built.
    """
    if tiles not in ("keep", "all"):
        raise ValueError(f"tiles must be 'keep' or 'all', got {tiles!r}")
    if isinstance(model, str):
        get_card(model)  # an unknown name fails here, before any actor starts
    started = time.time()
    layout = ProjectLayout(Path(project).resolve())
    if not layout.stores_dir.is_dir():
        raise StoreError(f"{layout.root} has no stores folder", hint="run `sfc tile` first")
    ids, slides, results = _stores(layout, cohort)
    rank = {sid: i for i, sid in enumerate(ids)}
    n_slides = len(slides) + len(results)
    if not slides:
        part = features_part(name or feature_name(model if isinstance(model, str) else "model"))
        seconds = time.time() - started
        return EmbeddingReport(tuple(results), seconds, str(layout.root), part, {}, "")
    ray = ensure_ray(address, num_cpus=num_cpus)
    plan = plan_actors(
        ray.cluster_resources(), device=device, num_actors=num_actors, max_actors=len(slides)
    )
    spec = EmbedderSpec(model=model, weights=weights, device=device, options=model_options or {})
    pool = ActorPool(
        ray,
        spec,
        plan,
        _embed_or_fail,
        max_restarts=max_restarts,
        max_task_retries=max_task_retries,
    )
    try:
        described = pool.describe()
    except ray.exceptions.RayError as exc:
        pool.close()
        raise _cause(exc, "the embedder could not be built in its Ray actor") from exc
    startup = time.time() - started
    part = name or feature_name(described["id"])
    stage = f"embed-{part}"
    for result in results:
        layout.write_status(result.slide_id, asdict(result), stage=stage)

    expected = {str(path): _expected_tiles(path, tiles) for _, path in slides}
    bar = tqdm(total=sum(expected.values()), unit="tile", disable=not progress, dynamic_ncols=True)
    finished = 0  # tiles of finished slides

    def on_result(store: str, value: EmbedResult | BaseException) -> None:
        nonlocal finished
        if isinstance(value, BaseException):  # the actor died beyond its retries
            value = _failed(store, _cause(value, "its embedder actor died"), time.time())
        finished += expected[store]
        results.append(value)
        layout.write_status(value.slide_id, asdict(value), stage=stage)
        on_progress(0)

    def on_progress(running_tiles: int) -> None:
        bar.set_postfix_str(f"slides {len(results)}/{n_slides}", refresh=False)
        bar.update(max(0, finished + running_tiles - bar.n))  # redraws at most 10 times/s

    options = {
        "tiles": tiles,
        "batch_size": batch_size,
        "name": part,
        "dtype": dtype,
        "overwrite": overwrite,
        "loader_threads": loader_threads,
    }
    try:
        pool.run(list(expected), options, on_result, on_progress if progress else None)
    finally:
        bar.close()
        pool.close()

    results.sort(key=lambda r: rank.get(r.slide_id, len(rank)))
    report = EmbeddingReport(
        results=tuple(results),
        seconds=time.time() - started,
        project=str(layout.root),
        part=features_part(part),
        embedder=described,
        actors=plan.describe(),
        startup_seconds=startup,
    )
    path = layout.status_dir / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return report
