"""Both detectors find the drawn tissue of a synthetic slide, and not its pen strokes.

The slide is small (8192 x 6144 px at 0.25 µm/px, so a 256 x 192 mask at 8 µm/px) and its
three pen strokes (green, blue, black; 150 µm wide) cross tissue and glass. IoU is measured
on mask pixels outside the pen strokes: under a stroke the tissue is inked, and excluding
it (the default) is intended, so those pixels count neither way; a separate test checks
that ink on glass is not taken for tissue.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import Polygon

from slideflow_core.slides import open_slide
from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide
from tiling.tissue import detect_tissue

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
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "slide.svs"
    truth = write_synthetic_slide(path, SPEC)
    with open_slide(path) as slide:
        yield slide, truth


@pytest.mark.parametrize("method", ["clam", "otsu"])
def test_detected_tissue_overlaps_the_truth(synthetic, method):
    slide, truth = synthetic
    tissue = detect_tissue(slide, method=method)
    expected = truth.tissue_mask(tissue.mask.shape)
    counted = ~truth.pen_mask(tissue.mask.shape)
    intersection = np.count_nonzero(tissue.mask & expected & counted)
    union = np.count_nonzero((tissue.mask | expected) & counted)
    assert intersection / union >= 0.9


@pytest.mark.parametrize("method", ["clam", "otsu"])
def test_pen_strokes_on_glass_are_not_tissue(synthetic, method):
    slide, truth = synthetic
    tissue = detect_tissue(slide, method=method)
    ink_on_glass = truth.pen_mask(tissue.mask.shape) & ~truth.tissue_mask(tissue.mask.shape)
    assert ink_on_glass.sum() > 100
    assert tissue.mask[ink_on_glass].mean() < 0.02


def test_without_pen_exclusion_saturated_ink_reads_as_tissue(synthetic):
    # The check above is meaningful: CLAM's saturation alone takes ink for tissue.
    slide, truth = synthetic
    tissue = detect_tissue(slide, method="clam", exclude_pen=False)
    ink_on_glass = truth.pen_mask(tissue.mask.shape) & ~truth.tissue_mask(tissue.mask.shape)
    assert tissue.mask[ink_on_glass].mean() > 0.5


def test_polygons_are_valid_level0_outlines_of_the_mask(synthetic):
    slide, _ = synthetic
    tissue = detect_tissue(slide)
    assert tissue.polygons.is_valid and not tissue.polygons.is_empty
    x0, y0, x1, y1 = tissue.polygons.bounds
    width, height = slide.dimensions
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    mask_area = tissue.mask.sum() * tissue.downsample[0] * tissue.downsample[1]
    assert tissue.polygons.area == pytest.approx(mask_area, rel=0.01)


def test_small_holes_are_filled_and_larger_ones_kept(synthetic):
    # The slide's one hole is about 3,200 µm² (60 µm across), below the default 20,000 µm²
    # threshold; resolving it takes a finer mask than the default 8 µm/px.
    slide, truth = synthetic
    (hole,) = [Polygon(ring) for p in truth.tissue.geoms for ring in p.interiors]
    filled = detect_tissue(slide, mask_mpp=2.0)
    kept = detect_tissue(slide, mask_mpp=2.0, min_hole_area_um2=1_000)
    assert not any(p.interiors for p in filled.polygons.geoms)
    (found,) = [Polygon(ring) for p in kept.polygons.geoms for ring in p.interiors]
    assert found.intersection(hole).area / found.union(hole).area > 0.7
    assert kept.polygons.is_valid


def test_mask_resolution_and_provenance(synthetic):
    slide, _ = synthetic
    tissue = detect_tissue(slide, mask_mpp=8.0)
    assert tissue.mask.dtype == bool and tissue.mask.shape == (192, 256)
    assert tissue.downsample == (32.0, 32.0)
    assert tissue.detector == "clam"
    assert tissue.params["mask_mpp"] == pytest.approx(8.0)
    assert tissue.params["calibrated"] is True
    assert tissue.params["min_tissue_area_mask_px"] == pytest.approx(10_000 / 64)
    json.dumps(tissue.params)
