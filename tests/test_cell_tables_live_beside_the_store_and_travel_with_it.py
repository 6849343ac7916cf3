"""A store's cell table lives beside it (``<id>.cells/``), outside the Zarr hierarchy.

So no Zarr listing meets a foreign file (zarr warns on each), while the table stays a
checked part of the store: its manifest covers it, ``verify`` finds damage, export reads
it, and it travels with the store to object storage and back.
"""

from __future__ import annotations

import uuid
import warnings

import fsspec
import pandas as pd
import pytest
import zarr

from cluster.objectstore import download_store, upload_store
from embedders.dense import segment_cohort
from slideflow_core.geojson import export_store
from slideflow_core.store import part_state, read_store_attrs
from slideflow_core.verify import verify
from tiling import TilingConfig, tile_cohort


@pytest.fixture(scope="module")
def store(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("beside")
    manifest = root / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    project = root / "project"
    config = TilingConfig(mpp=1.0, tile_px=128)
    assert tile_cohort(manifest, project, config, executor="local", progress=False).ok
    assert segment_cohort(project, "classical", executor="local", progress=False).ok
    return project / "stores" / "cmu.zarr"


def test_the_table_is_beside_the_store_and_in_its_manifest(store):
    assert not list(store.rglob("*.parquet"))
    table = store.parent / "cmu.cells" / "classical" / "cells.parquet"
    assert table.is_file()
    info = read_store_attrs(store)["parts"]["cells/classical"]
    assert info["table"] == "../cmu.cells/classical/cells.parquet"
    assert "../cmu.cells/classical/cells.parquet" in info["manifest"]["files"]
    checks = {p.part: p.status for p in verify(store, deep=True).parts}
    assert checks["cells/classical"] == "ok" and "corrupt" not in checks.values(), checks


def test_listing_the_store_without_consolidated_metadata_meets_no_foreign_file(store):
    def walk(group):
        for _, child in group.groups():
            walk(child)

    with warnings.catch_warnings():
        warnings.simplefilter("error", zarr.errors.ZarrUserWarning)
        walk(zarr.open_group(str(store), mode="r", use_consolidated=False))


def test_export_reads_the_table_beside_the_store(store, tmp_path):
    summary = export_store(store, tmp_path / "cells.geojson", what=("cells",))
    assert summary.counts["cells"] > 0


def test_the_table_travels_to_object_storage_and_back(store, tmp_path):
    url = f"memory://sfc-cells-{uuid.uuid4().hex[:8]}/stores/cmu.zarr"
    fs, path = fsspec.core.url_to_fs(url)
    try:
        upload_store(store, url)
        identity = read_store_attrs(store)["parts"]["cells/classical"]["identity"]
        assert part_state(url, "cells/classical", identity) == "complete"
        remote = {c.part: c.status for c in verify(url, deep=True).parts}
        assert remote["cells/classical"] == "ok", remote  # the table beside it, checksummed
        local = tmp_path / "stores" / "cmu.zarr"
        assert download_store(url, local)
        table = local.parent / "cmu.cells" / "classical" / "cells.parquet"
        assert table.read_bytes() == (store.parent / table.relative_to(local.parent)).read_bytes()
        assert part_state(local, "cells/classical", identity) == "complete"
    finally:
        fs.rm(path.split("/")[0], recursive=True)
