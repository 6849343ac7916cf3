"""On the real CMU-1 H&E biopsy the detected tissue is plausible and its polygons valid."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.slides import open_slide
from tiling.qc import background_mask
from tiling.tissue import detect_tissue


@pytest.fixture(scope="module")
def cmu(cmu_svs):
    with open_slide(cmu_svs) as slide:
        yield slide


@pytest.fixture(scope="module")
def detections(cmu):
    return {method: detect_tissue(cmu, method=method) for method in ("clam", "otsu")}


@pytest.mark.parametrize("method", ["clam", "otsu"])
def test_tissue_covers_a_plausible_fraction(detections, method):
    # About a third of the pixels are stained; holes filled and the pale stroma between
    # fibres make the outline somewhat larger.
    tissue = detections[method]
    assert 0.3 <= tissue.mask.mean() <= 0.5
    assert tissue.polygons.is_valid
    mask_area = tissue.mask.sum() * tissue.downsample[0] * tissue.downsample[1]
    assert tissue.polygons.area == pytest.approx(mask_area, rel=0.02)


def test_detected_tissue_agrees_with_the_stained_pixels(cmu, detections):
    tissue = detections["clam"]
    stained = ~background_mask(cmu.thumbnail(max(tissue.mask.shape)))
    assert stained.shape == tissue.mask.shape
    # Nearly every stained overview pixel is inside the tissue; little glass is.
    assert tissue.mask[stained].mean() > 0.85
    assert tissue.mask[~stained].mean() < 0.15


def test_dust_specks_are_dropped(cmu, detections):
    tissue = detections["clam"]
    everything = detect_tissue(cmu, min_tissue_area_um2=0)
    assert len(tissue.polygons.geoms) < len(everything.polygons.geoms)
    assert np.all(everything.mask[tissue.mask])
