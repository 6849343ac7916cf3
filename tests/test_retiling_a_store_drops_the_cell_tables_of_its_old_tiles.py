"""Re-tiling a slide replaces its store; the cell tables beside the old one go with it.

Cell tables live beside the store (``stores/<id>.cells/<run>/cells.parquet``) and are
reached through the store's ``cells`` part. A re-tiled store has no such part, so the
old tables would only be left behind unreferenced: they are removed once the new store
is in place, and a store tiled for the first time leaves other slides' tables alone.
"""

from __future__ import annotations

from slideflow_core.geojson.cells import cells_folder
from tiling import TilingConfig, tile_slide


def test_retiled_store_drops_its_old_cell_tables_only(cmu_svs, tmp_path):
    stores = tmp_path / "stores"
    store = stores / "cmu.zarr"
    tile_slide(cmu_svs, store, TilingConfig(mpp=1.0, tile_px=128))
    old = cells_folder(store) / "classical" / "cells.parquet"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"cells of the first tiling")
    other = cells_folder(stores / "other.zarr") / "classical" / "cells.parquet"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"another slide's cells")

    tile_slide(cmu_svs, store, TilingConfig(mpp=1.0, tile_px=64), overwrite=True)

    assert not cells_folder(store).exists()
    assert other.read_bytes() == b"another slide's cells"
