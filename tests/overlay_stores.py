"""Slide stores with tissue, tiles, MIL scores and cells, built with slideflow_core only.

Shared by the GeoJSON export, heatmap and viewer tests (imported, not collected).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
import zarr
from shapely.geometry import mapping

from slideflow_core.features import write_attention, write_features
from slideflow_core.geojson import CellTableWriter
from slideflow_core.store import commit_store, mark_part, start_store, write_part

TISSUE = shapely.Polygon(
    [(64, 64), (1400, 64), (1400, 960), (64, 960)],
    [[(300, 300), (500, 300), (500, 500), (300, 500)]],
)
CLASSES = ("Tumor", "Stroma")


def cell_rows(n: int, *, seed: int = 0, extent: tuple[int, int] = (1500, 1000)):
    """``n`` round nuclei (with cell boundaries on even rows), classes and measurements."""
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(20, extent[0] - 20, n), rng.uniform(20, extent[1] - 20, n)
    nuclei = [shapely.Point(x, y).buffer(4.0, 4) for x, y in zip(xs, ys, strict=True)]
    cells = [g.buffer(3.0, 4) if i % 2 == 0 else None for i, g in enumerate(nuclei)]
    classes = [CLASSES[i % 2] if i % 3 else None for i in range(n)]
    area = np.array([g.area for g in nuclei], np.float32)
    score = rng.uniform(0, 1, n).astype(np.float32)
    score[::5] = np.nan
    return nuclei, cells, classes, {"area": area, "score": score}


def make_store(
    root: Path,
    slide_id: str = "S1",
    *,
    grid: tuple[int, int] = (6, 4),
    tile_px: int = 256,
    bounds: list[int] | None = None,
    slide_path: str | Path = "missing.svs",
    dimensions: tuple[int, int] = (1600, 1100),
    run: str | None = "r1",
    score_kind: str | None = None,
    cells: int = 0,
    bad_cells: bool = False,
    roi: str | None = None,
) -> Path:
    """A committed store at ``root/stores/<slide_id>.zarr``.

    Tiles are ``tile_px`` squares (read at half size on level 1 with downsample
    2) on a ``grid`` of columns × rows. QC: ``blur`` is NaN on tile 1 and
    ``keep`` is False on tile 0. The run (if any) scores every tile but tile 2.
    """
    final = root / "stores" / f"{slide_id}.zarr"
    attrs = {
        "slide_id": slide_id,
        "slide": {
            "path": str(slide_path),
            "dimensions": list(dimensions),
            "level_downsamples": [1.0, 2.0, 4.0],
            "bounds": bounds,
            "mpp_override": None,
        },
        "tissue": {
            "outline": mapping(shapely.MultiPolygon([TISSUE])),
            "coordinate_space": "level0_px",
        },
    }
    partial = start_store(final, attrs)
    group = zarr.open_group(str(partial), mode="r+")
    cols, rows = grid
    xs, ys = np.meshgrid(np.arange(cols) * tile_px, np.arange(rows) * tile_px)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    n = len(coords)
    group.create_array("coords", data=coords)
    qc = group.require_group("qc")
    qc.create_array("tissue_fraction", data=np.linspace(0, 1, n, dtype=np.float32))
    blur = np.full(n, 50.0, np.float32)
    blur[1] = np.nan
    qc.create_array("blur", data=blur)
    keep = np.ones(n, bool)
    keep[0] = False
    qc.create_array("keep", data=keep)
    info = {
        "read_px": tile_px // 2,
        "level": 1,
        "tile_px": tile_px // 2,
        "n_tiles": n,
        "config": {"roi": roi},
        "coordinate_space": "level0_px",
    }
    mark_part(partial, "tiling", info)
    commit_store(partial, final)
    if run is not None:
        scored = np.delete(np.arange(n), 2)
        with write_features(
            final, "m", tile_index=scored, coords=coords[scored], dim=2, info={"identity": {}}
        ) as writer:
            writer.put(0, np.zeros((len(scored), 2)))
        if score_kind == "probability":
            p = np.linspace(0.05, 0.95, len(scored), dtype=np.float32)
            scores = np.stack([1 - p, p], axis=1)
            extra = {"score_kind": "probability", "class_names": list(CLASSES)}
        else:
            scores = np.linspace(0, 1, len(scored), dtype=np.float32)
            extra = {}
        write_attention(final, run, scores, model_id="m", info={"head": "abmil", **extra})
    if cells:
        nuclei, boundaries, classes, measurements = cell_rows(cells)
        if bad_cells:
            nuclei[0] = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # bow-tie: repairable
            boundaries[0] = None
            nuclei[1] = shapely.Polygon([(5, 5), (6, 6), (7, 7)])  # no area: dropped
        with write_part(final, "cells", {"table": "cells/cells.parquet"}) as part:
            table = Path(part.store.root) / "cells.parquet"
            with CellTableWriter(
                table,
                measurements=list(measurements),
                with_cells=True,
                with_classes=True,
                class_colors={"Tumor": (200, 0, 0)},
            ) as writer:
                writer.write(nuclei, cells=boundaries, classes=classes, measurements=measurements)
    return final
