"""A damaged cell table (deleted or truncated Parquet) is never read as cells: reading it
is an error naming the file, ``verify`` finds it, and a rerun of the segment stage redoes
it to the same table a clean run writes."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from embedders.dense import segment_cohort
from slideflow_core.errors import SlideflowError
from slideflow_core.geojson import export_store
from slideflow_core.verify import verify
from tiling import TilingConfig, tile_cohort

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def clean(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("cells-fault")
    manifest = root / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    project = root / "clean"
    tile_cohort(manifest, project, TilingConfig(mpp=0.5, tile_px=256), executor="local",
                progress=False)  # fmt: skip
    assert segment_cohort(project, "classical", executor="local", progress=False).ok
    return project


def _table(project):
    return next((project / "stores" / "cmu.cells").glob("classical/*.parquet"))


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_cell_table_is_refused_found_and_redone(clean, tmp_path, damage):
    project = tmp_path / "project"
    shutil.copytree(clean, project)
    table = _table(project)
    if damage == "delete":
        table.unlink()
    else:
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    store = project / "stores" / "cmu.zarr"

    with pytest.raises(SlideflowError, match=r"cells\.parquet"):
        export_store(store, tmp_path / "cells.geojson", what=("cells",))
    [check] = [p for p in verify(store).parts if p.part == "cells/classical"]
    assert check.status == "corrupt"

    report = segment_cohort(project, "classical", executor="local", progress=False)

    assert report.outcome("cmu").status == "done"  # redone, not skipped
    assert all(p.status != "corrupt" for p in verify(store, deep=True).parts)
    pd.testing.assert_frame_equal(pd.read_parquet(_table(project)), pd.read_parquet(_table(clean)))
