"""Level choice at a physical resolution: downsample only, tolerance is explicit."""

from __future__ import annotations

import pytest

from slideflow_core.errors import ResolutionError
from slideflow_core.slides import choose_level, is_placeholder_mpp, parse_magnification

PYRAMID = [0.25, 1.0, 4.0, 16.0]  # Aperio-style 4x pyramid at 40x


def test_exact_level_is_used_without_resize():
    choice = choose_level(PYRAMID, 1.0)
    assert (choice.level, choice.needs_resize, choice.actual_mpp) == (1, False, 1.0)
    assert choice.read_px(256) == 256


def test_between_levels_reads_the_finer_level_and_resizes_once():
    choice = choose_level(PYRAMID, 0.5)
    assert choice.level == 0
    assert choice.needs_resize
    assert choice.read_px(256) == 512
    assert choice.actual_mpp == 0.5


def test_level_within_tolerance_counts_as_exact():
    # A "40x" scanner at 0.2625 µm/px serves 0.25 µm/px requests as stored (5 % tolerance).
    choice = choose_level([0.2625, 1.05], 0.25, tolerance=0.05)
    assert (choice.level, choice.needs_resize) == (0, False)
    assert choice.actual_mpp == pytest.approx(0.2625)


def test_slightly_coarser_level_within_tolerance_is_preferred_over_resizing():
    choice = choose_level(PYRAMID, 0.97)
    assert (choice.level, choice.needs_resize) == (1, False)


def test_upsampling_beyond_tolerance_is_refused_with_the_fix():
    with pytest.raises(ResolutionError) as info:
        choose_level([0.5, 2.0], 0.25, slide_name="s.svs")
    assert "s.svs" in str(info.value)
    assert "upsampling" in str(info.value)
    assert info.value.hint and "0.475" in info.value.hint


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_nonsense_mpp_is_refused(bad):
    with pytest.raises(ResolutionError):
        choose_level(PYRAMID, bad)


@pytest.mark.parametrize(
    ("text", "mpp"), [("20x", 0.5), ("40X", 0.25), (" 10x ", 1.0), ("2.5x", 4.0), (20, 0.5)]
)
def test_magnification_strings_convert_to_mpp(text, mpp):
    assert parse_magnification(text) == pytest.approx(mpp)


@pytest.mark.parametrize("text", ["twenty", "20", "x20", "-5x", "0x"])
def test_bad_magnification_strings_are_refused(text):
    with pytest.raises(ValueError):
        parse_magnification(text)


@pytest.mark.parametrize(
    ("mpp", "placeholder"),
    [
        (352.7777798, True),  # 72 dpi stored as 28.346 px/cm
        (25400 / 96, True),
        (25400 / 300, True),
        (1000.0, True),
        (0.0, True),
        (0.499, False),
        (0.2282, False),
        (16.783, False),  # a real low-resolution DICOM calibration
    ],
)
def test_placeholder_resolutions_are_not_calibrations(mpp, placeholder):
    assert is_placeholder_mpp(mpp) is placeholder
