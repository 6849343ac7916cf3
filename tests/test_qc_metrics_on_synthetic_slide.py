"""QC metrics of synthetic-slide tiles whose content is known from the ground truth.

Three pen strokes (green, blue and black ink, 150 µm wide) cross tissue and glass, and four
out-of-focus patches sit in the tissue; 128-px level-0 tiles are chosen by where they lie
in the truth geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from slideflow_core.slides import open_slide
from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide
from tiling.qc import QC_COLUMNS, QCThresholds, qc_keep, tile_qc

TILE_PX = 128
SPEC = SyntheticSlideSpec(
    width_px=8192,
    height_px=6144,
    mpp=0.25,
    seed=6,
    n_pen_marks=3,
    pen_width_um=150,
    n_blur_regions=4,
    associated_images=False,
)


@pytest.fixture(scope="module")
def tiles_by_kind(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "slide.svs"
    truth = write_synthetic_slide(path, SPEC)
    ys, xs = np.mgrid[0 : SPEC.height_px : TILE_PX, 0 : SPEC.width_px : TILE_PX]
    xs, ys = xs.ravel(), ys.ravel()
    boxes = shapely.box(xs, ys, xs + TILE_PX, ys + TILE_PX)
    inside_tissue = shapely.contains(truth.tissue, boxes)
    inked = shapely.intersects(truth.pen_marks, boxes)
    # The blur bleeds a few sigmas (sigma is 8 px here) past the out-of-focus patches.
    near_blur = shapely.intersects(truth.blur_regions.buffer(100), boxes)
    kinds = {
        "ink": shapely.contains(truth.pen_marks, boxes),
        "ink_on_tissue": shapely.contains(truth.pen_marks, boxes) & inside_tissue,
        "blurred": shapely.contains(truth.blur_regions, boxes) & ~inked,
        "sharp": inside_tissue & ~near_blur & ~inked,
        "glass": ~shapely.intersects(truth.tissue.union(truth.pen_marks).buffer(50), boxes),
    }
    with open_slide(path) as slide:
        return {kind: read_some(slide, xs[sel], ys[sel]) for kind, sel in kinds.items()}


def read_some(slide, xs: np.ndarray, ys: np.ndarray, limit: int = 64) -> np.ndarray:
    """Up to ``limit`` of the tiles at ``xs, ys``, evenly spread over them."""
    pick = np.unique(np.linspace(0, len(xs) - 1, min(limit, len(xs))).astype(int))
    return np.stack([slide.read_region((int(xs[i]), int(ys[i])), 0, (TILE_PX,) * 2) for i in pick])


@pytest.fixture(scope="module")
def metrics(tiles_by_kind):
    return {kind: tile_qc(tiles) for kind, tiles in tiles_by_kind.items()}


def test_every_kind_of_tile_is_represented(tiles_by_kind):
    counts = {kind: len(tiles) for kind, tiles in tiles_by_kind.items()}
    assert counts["ink_on_tissue"] >= 20 and counts["blurred"] >= 10, counts
    assert min(counts.values()) >= 10, counts


def test_metrics_are_float32_columns(metrics):
    for values in metrics.values():
        assert tuple(values) == QC_COLUMNS
        assert all(v.dtype == np.float32 for v in values.values())


def test_tiles_under_pen_strokes_are_mostly_ink(metrics):
    ink = metrics["ink"]["pen_fraction"]
    assert np.median(ink) > 0.8
    # Ink over tissue is darker and duller, so only part of it is caught, but always far
    # more than the 5 % that QC tolerates.
    assert metrics["ink_on_tissue"]["pen_fraction"].min() > 0.15


def test_glass_tiles_are_background(metrics):
    glass = metrics["glass"]
    assert glass["background_fraction"].min() > 0.99
    assert glass["tissue_fraction"].max() < 0.01
    assert glass["pen_fraction"].max() == 0


def test_sharp_tissue_is_tissue_without_ink(metrics):
    sharp = metrics["sharp"]
    assert np.median(sharp["tissue_fraction"]) > 0.95
    assert sharp["pen_fraction"].max() < 0.01


def test_out_of_focus_tissue_scores_lower_blur(metrics):
    blurred, sharp = metrics["blurred"]["blur"], metrics["sharp"]["blur"]
    assert blurred.max() < np.percentile(sharp, 5)
    assert blurred.max() < 0.1 * np.median(sharp)


def test_default_thresholds_keep_sharp_tissue_and_drop_ink_and_glass(metrics):
    thresholds = QCThresholds()
    assert qc_keep(metrics["sharp"], thresholds).mean() > 0.95
    assert not qc_keep(metrics["ink_on_tissue"], thresholds).any()
    assert not qc_keep(metrics["glass"], thresholds).any()
    blur_gate = QCThresholds(min_blur=50.0)
    assert not qc_keep(metrics["blurred"], blur_gate).any()
