"""Stream a synthetic slide into a pyramidal, JPEG-tiled, Aperio-style TIFF.

Level-0 tile rows are rendered and JPEG-encoded (in worker processes for large slides) and
handed to ``tifffile`` as pre-encoded bytes, in order, with a bounded number of rows in
flight. Each finished row also feeds the reduced levels (:mod:`pyramid`), which are written
after the thumbnail from their temporary tile files. Nothing ever holds a whole level
except levels small enough to keep for the thumbnail.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from tqdm import tqdm

from slideflow_core.synthetic import aperio
from slideflow_core.synthetic.pyramid import RETAIN_MAX_PX, Pyramid, level_sizes
from slideflow_core.synthetic.render import TileRenderer
from slideflow_core.synthetic.rows import Row, RowRenderer, init_worker, render_row_in_worker
from slideflow_core.synthetic.scene import Scene, build_scene
from slideflow_core.synthetic.spec import SyntheticSlideSpec
from slideflow_core.synthetic.truth import SyntheticTruth

# Below this many level-0 tiles, starting worker processes costs more than it saves.
_MIN_TILES_FOR_WORKERS = 2048
# Rows rendered ahead of the writer, per worker: keeps workers busy, memory a few rows.
_ROWS_IN_FLIGHT_PER_WORKER = 3
# Classic TIFF offsets are 32-bit; switch to BigTIFF well before the file could reach 4 GiB.
_BIGTIFF_RAW_BYTES = 2**31
# JPEG 4:2:0 strips must hold whole 16-row MCUs.
_STRIP_ROWS = 16


def write_synthetic_slide(
    path: str | os.PathLike[str],
    spec: SyntheticSlideSpec | None = None,
    *,
    progress: bool = False,
    workers: int | None = None,
    **overrides: Any,
) -> SyntheticTruth:
    """Write a synthetic H&E-like whole-slide image and return its ground truth.

    Parameters
    ----------
    path
        Output file (``.svs`` or ``.tiff``); written under a temporary name, then renamed.
    spec
        What to draw; defaults to ``SyntheticSlideSpec()``.
    progress
        Show a progress bar over level-0 tile rows.
    workers
        Render processes; defaults to the number of CPUs. Small slides (and ``workers=1``)
        render in this process.
    **overrides
        Spec fields to replace, e.g. ``width_px=50_000, seed=3``.

    Returns
    -------
    SyntheticTruth
        Tissue, pen and blur geometry and nucleus centroids, in level-0 pixels.

    Raises
    ------
    ValueError
        If the spec (after overrides) is invalid.
    TypeError
        If an override names no spec field.

    Examples
    --------
    >>> truth = write_synthetic_slide("slide.svs", width_px=4096, height_px=4096)  # doctest: +SKIP
    >>> truth.nuclei.shape  # doctest: +SKIP
    (1913, 2)
    """
    spec = (spec or SyntheticSlideSpec()).with_overrides(**overrides)
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    path = Path(path)
    scene = build_scene(spec)
    partial = path.with_name(f".{path.name}.partial")
    try:
        _write_tiff(partial, scene, progress, workers)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return scene.truth


def _write_tiff(path: Path, scene: Scene, progress: bool, workers: int) -> None:
    spec = scene.truth.spec
    sizes = level_sizes(spec.width_px, spec.height_px, spec.tile_px, spec.level_downsample)
    keep_level0 = spec.width_px * spec.height_px <= RETAIN_MAX_PX
    common = {
        "dtype": np.uint8,
        "photometric": "rgb",
        "metadata": None,
        "resolution": (1e4 / spec.mpp, 1e4 / spec.mpp),
        "resolutionunit": "CENTIMETER",
    }
    # tifffile tags JPEG-compressed RGB with subsampling as YCbCr 4:2:0, matching encode_tile.
    tiled = {"tile": (spec.tile_px, spec.tile_px), "compression": "jpeg", "subsampling": (2, 2)}
    with ExitStack() as stack:
        temp_dir = stack.enter_context(
            tempfile.TemporaryDirectory(dir=path.parent, prefix=".synthetic-")
        )
        render_rows, in_flight = _row_source(stack, scene, workers, keep_level0)
        tiff = stack.enter_context(
            tifffile.TiffWriter(
                path, bigtiff=spec.width_px * spec.height_px * 3 >= _BIGTIFF_RAW_BYTES
            )
        )
        pyramid = Pyramid(
            sizes,
            tile_px=spec.tile_px,
            downsample=spec.level_downsample,
            quality=spec.jpeg_quality,
            temp_dir=temp_dir,
        )
        stack.callback(pyramid.close)
        level0 = np.empty((spec.height_px, spec.width_px, 3), np.uint8) if keep_level0 else None
        tiff.write(
            _level0_tiles(render_rows, in_flight, spec, pyramid, level0, progress),
            shape=(spec.height_px, spec.width_px, 3),
            description=aperio.level_description(spec),
            **tiled,
            **common,
        )
        pyramid.finish()
        wholes = [level0] + [level.whole for level in pyramid.levels]
        thumbnail = aperio.make_thumbnail(next(w for w in wholes if w is not None))
        tiff.write(
            thumbnail,
            description=aperio.thumbnail_description(spec, thumbnail.shape[1::-1]),
            compression="jpeg",
            rowsperstrip=_STRIP_ROWS,
            **common,
        )
        for level in pyramid.levels:
            tiff.write(
                iter(level.store),
                shape=(level.height, level.width, 3),
                description=aperio.level_description(spec, (level.width, level.height)),
                **tiled,
                **common,
            )
        if spec.associated_images:
            _write_associated(tiff, spec, thumbnail, common)


def _row_source(
    stack: ExitStack, scene: Scene, workers: int, keep_pixels: bool
) -> tuple[Callable[[int], Future[Row] | Row], int]:
    """A function starting the render of a tile row (in worker processes, or here), and how
    many rows may be under way at once."""
    spec = scene.truth.spec
    tiles = -(-spec.width_px // spec.tile_px) * -(-spec.height_px // spec.tile_px)
    if workers == 1 or tiles < _MIN_TILES_FOR_WORKERS:
        return RowRenderer(TileRenderer(scene), keep_pixels=keep_pixels), 1
    # Fork where available: spawn would re-import the caller's __main__ (breaking unguarded
    # scripts) and pickle the scene. A fork-context pool starts all workers at the first
    # submit, before this module starts any thread (progress bar, pool manager).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "fork":
        TileRenderer(scene)  # fills the texture-bank cache, which forked workers inherit
    pool = stack.enter_context(
        ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=init_worker,
            initargs=(scene, keep_pixels),
        )
    )
    return (lambda ty: pool.submit(render_row_in_worker, ty)), workers * _ROWS_IN_FLIGHT_PER_WORKER


def _level0_tiles(
    render_rows: Callable[[int], Future[Row] | Row],
    in_flight: int,
    spec: SyntheticSlideSpec,
    pyramid: Pyramid,
    level0: np.ndarray | None,
    progress: bool,
) -> Iterator[bytes]:
    """Encoded level-0 tiles in TIFF order (row-major), feeding the pyramid on the way."""
    t = spec.tile_px
    rows_down = -(-spec.height_px // t)
    # Submit the first rows before the progress bar exists (see _row_source on forking).
    pending: deque[Future[Row] | Row] = deque(
        render_rows(ty) for ty in range(min(in_flight, rows_down))
    )
    next_row = len(pending)
    with tqdm(total=rows_down, desc="synthetic slide", unit="row", disable=not progress) as bar:
        for ty in range(rows_down):
            item = pending.popleft()
            if next_row < rows_down:
                pending.append(render_rows(next_row))
                next_row += 1
            row = item.result() if isinstance(item, Future) else item
            pyramid.add_strip(row.strip, ty)
            if level0 is not None and row.pixels is not None:
                rows = min(t, spec.height_px - ty * t)
                level0[ty * t : ty * t + rows] = row.pixels[:rows, : spec.width_px]
            bar.update()
            yield from row.tiles


def _write_associated(
    tiff: tifffile.TiffWriter, spec: SyntheticSlideSpec, thumbnail: np.ndarray, common: dict
) -> None:
    """Label (LZW, as Aperio stores it) and macro (JPEG), flagged as reduced images."""
    label = aperio.make_label(spec)
    macro = aperio.make_macro(spec, thumbnail, label)
    tiff.write(
        label,
        description=aperio.associated_description("label", label.shape[1::-1]),
        compression="lzw",
        subfiletype=1,
        **common,
    )
    tiff.write(
        macro,
        description=aperio.associated_description("macro", macro.shape[1::-1]),
        compression="jpeg",
        rowsperstrip=_STRIP_ROWS,
        subfiletype=9,
        **common,
    )
