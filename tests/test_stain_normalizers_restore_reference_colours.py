"""Normalisers fitted on a real H&E region undo a colour change and leave it alone otherwise.

The perturbation scales each channel's optical density differently and adds a faint tint,
as a different stain batch or scanner would: haematoxylin and eosin both change hue and
strength.
"""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.slides import open_slide
from tiling.qc import background_mask
from tiling.stain import create_normalizer, stain_normalizers

METHODS = stain_normalizers.names()


@pytest.fixture(scope="module")
def region(cmu_svs):
    """A 512-px square of the biopsy: epidermis, dermis and some glass."""
    with open_slide(cmu_svs) as slide:
        return slide.read_region((700, 1900), 0, (512, 512))


def restain(image: np.ndarray) -> np.ndarray:
    density = -np.log((image.astype(float) + 1) / 256)
    density = density * [1.25, 0.8, 1.1] + [0.0, 0.03, -0.02]
    return np.clip(np.rint(256 * np.exp(-density) - 1), 0, 255).astype(np.uint8)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_both_methods_are_registered_with_metadata():
    rows = {row["name"]: row for row in stain_normalizers.list_entries()}
    assert set(rows) == {"reinhard", "macenko"}
    assert rows["macenko"]["params"] == {"beta": 0.15, "alpha": 1.0}
    assert all(row["description"] and row["reference"] for row in rows.values())


@pytest.mark.parametrize("method", METHODS)
def test_an_image_normalised_to_itself_is_unchanged(region, method):
    normalizer = create_normalizer(method).fit(region)
    assert mean_abs_error(normalizer.transform(region), region) < 0.5


@pytest.mark.parametrize("method", METHODS)
def test_a_restained_copy_is_brought_back_towards_the_original(region, method):
    restained = restain(region)
    before = mean_abs_error(restained, region)
    assert before > 8
    normalizer = create_normalizer(method).fit(region)
    assert mean_abs_error(normalizer.transform(restained), region) < 0.5 * before


@pytest.mark.parametrize("method", METHODS)
def test_glass_stays_white(region, method):
    normalizer = create_normalizer(method).fit(region)
    out = normalizer.transform(restain(region))
    glass = background_mask(region)
    assert glass.mean() > 0.1
    assert out[glass].mean() > 230
    assert out[glass].std(axis=0).max() < 10
    blank = np.full((64, 64, 3), 242, np.uint8)
    np.testing.assert_array_equal(normalizer.transform(blank), blank)


@pytest.mark.parametrize("method", METHODS)
def test_a_slide_level_source_keeps_differences_between_tiles(region, method):
    # Per-tile estimates pull every tile towards the reference's average look; with the
    # source fitted once on the whole region, each tile keeps its own content.
    tiles = region.reshape(2, 256, 2, 256, 3).transpose(0, 2, 1, 3, 4).reshape(4, 256, 256, 3)
    per_tile = create_normalizer(method).fit(region).transform(tiles)
    shared = create_normalizer(method).fit(region).fit_source(region).transform(tiles)
    assert mean_abs_error(shared, tiles) < 0.5
    assert mean_abs_error(per_tile, tiles) > 2 * mean_abs_error(shared, tiles)
    blank = np.full((32, 32, 3), 242, np.uint8)
    shared_normalizer = create_normalizer(method).fit(region).fit_source(region)
    assert mean_abs_error(shared_normalizer.transform(blank), blank) < 3
