"""A segmentation run writes its cell table atomically and resumes band by band."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from cells_fixtures import sparse_slide, tiled_store

from embedders.dense import ClassicalSegmenter, SegmentationError, segment_slide
from embedders.dense import bands as bands_module
from slideflow_core.geojson.cells import CellTable, store_cell_table
from slideflow_core.store import read_store_attrs

GRID = {"tile_px": 256, "overlap_px": 32, "band_rows": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    slide, _ = sparse_slide(folder, width_px=2048, height_px=2048, n_tissue_regions=1)
    return tiled_store(folder, slide)


def _table(path):
    frame = pq.read_table(path).to_pandas()
    return frame.sort_values(["y", "x"]).reset_index(drop=True)


def test_interrupted_run_resumes_the_missing_bands_only(store, monkeypatch):
    segmenter = ClassicalSegmenter(mpp=0.5)
    reference = segment_slide(store, segmenter, name="reference", **GRID)
    assert reference.status == "done" and reference.details["bands"] >= 3
    expected = _table(reference.details["table"])

    real = bands_module.segment_band
    calls = []

    def crash_on_third(plan, seg, band):
        calls.append(band)
        if len(calls) == 3:
            raise RuntimeError("worker died")
        return real(plan, seg, band)

    monkeypatch.setattr("embedders.dense.stage.segment_band", crash_on_third)
    with pytest.raises(RuntimeError, match="worker died"):
        segment_slide(store, segmenter, name="resumed", **GRID)
    attrs = read_store_attrs(store)
    assert "cells/resumed" not in attrs["parts"]  # nothing half-written looks complete
    assert not (store / "cells" / "resumed").exists()

    monkeypatch.setattr("embedders.dense.stage.segment_band", real)
    resumed = segment_slide(store, segmenter, name="resumed", **GRID)
    assert resumed.status == "done"
    assert resumed.details["bands_resumed"] == 2
    got = _table(resumed.details["table"])
    assert len(got) == len(expected) == resumed.details["n_cells"]
    np.testing.assert_allclose(got[["x", "y", "area_um2"]], expected[["x", "y", "area_um2"]])

    again = segment_slide(store, segmenter, name="resumed", **GRID)
    assert again.status == "skipped"
    # The store's cells entry points at the latest table, as exporters read it.
    table = store_cell_table(store, read_store_attrs(store))
    assert table is not None and len(CellTable(table)) == resumed.details["n_cells"]


def test_a_table_made_differently_is_not_reused_silently(store):
    segment_slide(store, ClassicalSegmenter(mpp=0.5), name="strict", **GRID)
    with pytest.raises(SegmentationError, match="segmented differently") as info:
        segment_slide(store, ClassicalSegmenter(mpp=0.5, min_area_um2=20.0), name="strict", **GRID)
    assert "overwrite" in (info.value.hint or "")
    redone = segment_slide(
        store, ClassicalSegmenter(mpp=0.5, min_area_um2=20.0), name="strict", overwrite=True, **GRID
    )
    assert redone.status == "done"
