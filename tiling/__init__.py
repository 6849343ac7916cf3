"""Tiling stage: tissue detection and physical-resolution tiles into per-slide Zarr stores.

Python API::

    import tiling
    report = tiling.tile_cohort("manifest.csv", out="project", mpp=0.5, tile_px=256)
    tiles = tiling.open_cohort("project")          # Dask array + a table of tile metadata

Stands on :mod:`slideflow_core` (slides, cohorts, stores); imports no other stage.
"""

from __future__ import annotations

from tiling.config import TilingConfig
from tiling.grid import TileGrid, plan_grid
from tiling.h5 import export_h5, import_h5, read_h5_coords
from tiling.qc import QCThresholds, qc_keep, tile_qc
from tiling.reader import TileReader
from tiling.stage import TileStage, tile_cohort, tile_slide
from tiling.stain import create_normalizer, fit_to_slide, stain_normalizers
from tiling.tissue import TissueMask, detect_tissue, tissue_detectors
from tiling.view import CohortTiles, TileStore, open_cohort, open_store

__all__ = [
    "CohortTiles",
    "QCThresholds",
    "TileGrid",
    "TileReader",
    "TileStage",
    "TileStore",
    "TilingConfig",
    "TissueMask",
    "create_normalizer",
    "detect_tissue",
    "export_h5",
    "fit_to_slide",
    "import_h5",
    "open_cohort",
    "open_store",
    "plan_grid",
    "qc_keep",
    "read_h5_coords",
    "stain_normalizers",
    "tile_cohort",
    "tile_qc",
    "tile_slide",
    "tissue_detectors",
]
