"""On a synthetic slide with known nucleus centroids, the classical segmenter finds them."""

from __future__ import annotations

import numpy as np
import pytest
from cells_fixtures import SPARSE_SPEC, sparse_slide

from embedders.dense import match_points, segment_slide
from embedders.dense.measure import MEASUREMENTS
from slideflow_core.geojson.cells import CellTable


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    folder = tmp_path_factory.mktemp("f1")
    slide, truth = sparse_slide(folder)
    result = segment_slide(slide, "classical", out=folder / "cells.parquet", tile_px=512)
    return truth, result


def test_detection_f1_against_the_true_centroids_is_at_least_0_9(segmented):
    truth, result = segmented
    table = CellTable(result.details["table"])
    found = np.concatenate(
        [np.column_stack([b.measurements["x"], b.measurements["y"]]) for b in table.batches()]
    )
    # 3 µm (12 level-0 px at 0.25 µm/px): about half the smallest nucleus diameter.
    det = match_points(truth.nuclei, found, max_distance=3.0 / SPARSE_SPEC.mpp)
    assert det.f1 >= 0.9, det
    assert det.precision >= 0.95, det


def test_every_cell_has_a_polygon_around_its_centroid_and_plausible_measurements(segmented):
    _, result = segmented
    table = CellTable(result.details["table"])
    assert table.measurement_columns == MEASUREMENTS
    batch = next(table.batches())
    inside = [
        p.buffer(1.0).contains_properly(_point(x, y))
        for p, x, y in zip(
            batch.nuclei, batch.measurements["x"], batch.measurements["y"], strict=True
        )
    ]
    assert np.mean(inside) > 0.99
    low, high = SPARSE_SPEC.nucleus_diameter_um
    area = batch.measurements["area_um2"]
    # Most nuclei are single: their areas lie near the drawn ellipses' range.
    assert np.median(area) == pytest.approx(np.pi * ((low + high) / 4) ** 2, rel=0.35)
    assert (batch.measurements["solidity"] <= 1).all()
    assert (
        (batch.measurements["eccentricity"] >= 0) & (batch.measurements["eccentricity"] < 1)
    ).all()
    assert (batch.measurements["mean_od_h"] > batch.measurements["mean_od_e"]).mean() > 0.9


def _point(x: float, y: float):
    import shapely

    return shapely.Point(x, y)
