"""``segment_cohort`` runs the segment stage on Ray tasks: tables per store, status, resume."""

from __future__ import annotations

import json

import pytest
from cells_fixtures import sparse_slide

from embedders.dense import segment_cohort
from slideflow_core.geojson.cells import CellTable, store_cell_table
from slideflow_core.store import read_store_attrs


@pytest.mark.integration
def test_cohort_bands_run_on_ray_and_every_store_gets_its_table(tmp_path, ray_session):
    from tiling import TilingConfig, tile_slide

    slide, _ = sparse_slide(tmp_path, width_px=2048, height_px=2048, n_tissue_regions=1)
    project = tmp_path / "project"
    stores = project / "stores"
    for slide_id in ("a", "b"):
        tile_slide(
            slide,
            stores / f"{slide_id}.zarr",
            TilingConfig(mpp=0.5, tile_px=256, store_pixels=False),
            slide_id=slide_id,
        )
    (stores / "broken.zarr").mkdir()  # fails alone, the others go on
    report = segment_cohort(project, tile_px=256, band_rows=1, progress=False)
    assert report.stage == "segment" and report.part == "cells/classical"
    assert report.info["executor"].startswith("Ray tasks")
    by_id = {r.slide_id: r for r in report.results}
    assert by_id["broken"].status == "failed" and "no slide store" in by_id["broken"].error
    assert by_id["a"].status == by_id["b"].status == "done"
    n_cells = by_id["a"].details["n_cells"]
    assert n_cells == by_id["b"].details["n_cells"] > 50
    assert by_id["a"].details["bands"] > 1  # several band tasks for one slide
    for slide_id in ("a", "b"):
        store = stores / f"{slide_id}.zarr"
        table = store_cell_table(store, read_store_attrs(store))
        assert len(CellTable(table)) == n_cells
        status = json.loads((project / "status" / "segment" / f"{slide_id}.json").read_text())
        assert status["status"] == "done" and status["details"]["n_cells"] == n_cells
    broken = json.loads((project / "status" / "segment" / "broken.json").read_text())
    assert broken["status"] == "failed"
    summary = json.loads((project / "status" / "segment.json").read_text())
    assert [r["slide_id"] for r in summary["results"]] == ["a", "b", "broken"]
    assert "cells/classical" in str(report)

    again = segment_cohort(project, tile_px=256, band_rows=1, progress=False)
    assert {r.slide_id: r.status for r in again.results} == {
        "a": "skipped",
        "b": "skipped",
        "broken": "failed",
    }
