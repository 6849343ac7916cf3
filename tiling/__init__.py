"""Tiling stage: tissue detection and physical-resolution tiles into per-slide Zarr stores.

Python API::

    import tiling
    report = tiling.tile_cohort("manifest.csv", out="project", mpp=0.5, tile_px=256)
    tiles = tiling.open_cohort("project")          # Dask array + a table of tile metadata

Stands on :mod:`slideflow_core` (slides, cohorts, stores); imports no other stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slideflow_core.lazy import lazy_exports

if TYPE_CHECKING:
    from tiling.config import TilingConfig
    from tiling.grid import TileGrid, plan_grid
    from tiling.h5 import export_h5, import_h5, read_h5_coords
    from tiling.qc import QCThresholds, qc_keep, tile_qc
    from tiling.reader import TileReader
    from tiling.stage import TileStage, tile_cohort, tile_slide
    from tiling.stain import create_normalizer, fit_to_slide, stain_normalizers
    from tiling.tissue import TissueMask, detect_tissue, tissue_detectors
    from tiling.view import CohortTiles, TileStore, open_cohort, open_store

# Public name -> module, loaded on first use: a Ray worker that tiles (or `sfc`) does not
# pay for h5py and dask (a third of a second) until it exports or opens stores.
_EXPORTS = {
    "TilingConfig": "tiling.config",
    "TileGrid": "tiling.grid",
    "plan_grid": "tiling.grid",
    "export_h5": "tiling.h5",
    "import_h5": "tiling.h5",
    "read_h5_coords": "tiling.h5",
    "QCThresholds": "tiling.qc",
    "qc_keep": "tiling.qc",
    "tile_qc": "tiling.qc",
    "TileReader": "tiling.reader",
    "TileStage": "tiling.stage",
    "tile_cohort": "tiling.stage",
    "tile_slide": "tiling.stage",
    "create_normalizer": "tiling.stain",
    "fit_to_slide": "tiling.stain",
    "stain_normalizers": "tiling.stain",
    "TissueMask": "tiling.tissue",
    "detect_tissue": "tiling.tissue",
    "tissue_detectors": "tiling.tissue",
    "CohortTiles": "tiling.view",
    "TileStore": "tiling.view",
    "open_cohort": "tiling.view",
    "open_store": "tiling.view",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

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
