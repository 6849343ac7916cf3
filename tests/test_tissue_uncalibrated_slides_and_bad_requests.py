"""Slides without calibration are still detected; bad requests fail with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slideflow_core.errors import RegistryError
from slideflow_core.slides import open_slide
from tiling.qc import background_mask
from tiling.tissue import detect_tissue, tissue_detectors


@pytest.fixture(scope="module")
def uncalibrated(slides_dir):
    # A generic TIFF whose 72-dpi resolution tag is not a calibration: coloured boxes on white.
    with open_slide(slides_dir / "pathml_small_HE_levels.tiff") as slide:
        assert not slide.has_mpp
        yield slide


@pytest.fixture(scope="module")
def cmu(cmu_svs):
    with open_slide(cmu_svs) as slide:
        yield slide


def test_uncalibrated_slide_is_detected_in_mask_pixels(uncalibrated):
    # The overview is the slide itself (300 x 250 < max_mask_px), and area thresholds are
    # taken in mask pixels as if a mask pixel were mask_mpp µm wide.
    tissue = detect_tissue(uncalibrated, exclude_pen=False)
    assert tissue.mask.shape == (250, 300) and tissue.downsample == (1.0, 1.0)
    assert tissue.params["calibrated"] is False and tissue.params["mask_mpp"] is None
    assert tissue.params["min_tissue_area_mask_px"] == pytest.approx(10_000 / 8.0**2)
    boxes = ~background_mask(uncalibrated.read_region((0, 0), 0, (300, 250)))
    assert (tissue.mask & boxes).sum() / (tissue.mask | boxes).sum() > 0.95
    assert tissue.polygons.is_valid
    json.dumps(tissue.params)


def test_uncalibrated_overview_is_capped(uncalibrated):
    tissue = detect_tissue(uncalibrated, max_mask_px=100, exclude_pen=False)
    assert max(tissue.mask.shape) == 100
    assert tissue.downsample == pytest.approx((3.0, 3.0), rel=0.01)


def test_unknown_detector_lists_the_available_ones(cmu):
    with pytest.raises(RegistryError, match=r"unknown tissue detector 'otsy'.*clam, otsu") as info:
        detect_tissue(cmu, method="otsy")
    assert "otsu" in info.value.hint


def test_unknown_setting_names_the_accepted_ones(cmu):
    with pytest.raises(TypeError, match=r"'channel'.*threshold, median_kernel_px"):
        detect_tissue(cmu, method="clam", channel="od")


@pytest.mark.parametrize(
    "settings",
    [{"threshold": -1}, {"threshold": "auto"}, {"median_kernel_px": 4}, {"close_kernel_px": -2}],
)
def test_bad_settings_are_refused(cmu, settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        detect_tissue(cmu, **settings)


def test_registry_lists_detectors_with_their_defaults():
    rows = {row["name"]: row for row in tissue_detectors.list_entries()}
    assert set(rows) == {"clam", "otsu"}
    assert rows["clam"]["params"]["threshold"] == 8
    assert rows["otsu"]["params"]["threshold"] == "otsu"
    assert all(row["available"] and row["description"] for row in rows.values())


def test_fixed_and_otsu_thresholds_are_recorded(uncalibrated):
    fixed = detect_tissue(uncalibrated, threshold=20, exclude_pen=False)
    otsu = detect_tissue(uncalibrated, threshold="otsu", exclude_pen=False)
    assert fixed.params["threshold_used"] == 20.0
    assert 0 <= otsu.params["threshold_used"] < 255
    assert np.array_equal(fixed.mask, otsu.mask)  # saturated boxes on grey glass: one split
