"""The tissue mask's area filter equals the same rule computed with SciPy's labelling.

Pieces of tissue (8-connected) smaller than the minimum are dropped; holes (4-connected
background not touching the border) smaller than the minimum are filled. Checked on
masks with a handful of components and with more than 65,535 (the 16-bit label limit).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tiling.tissue import _filter_areas


def _reference(mask: np.ndarray, min_tissue: float, min_hole: float) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    tissue = (areas >= min_tissue)[labels] & mask
    holes, count = ndimage.label(~tissue)
    areas = np.bincount(holes.ravel(), minlength=count + 1)
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    small = areas < min_hole
    small[border] = False
    small[0] = False
    return tissue | small[holes]


@pytest.mark.parametrize(
    ("shape", "density", "expect_many"),
    [((300, 400), 0.55, False), ((300, 400), 0.75, False), ((1100, 1100), 0.5, True)],
)
def test_area_filter_matches_scipy(shape, density, expect_many):
    rng = np.random.default_rng(7)
    mask = rng.random(shape) < density
    many = ndimage.label(mask, structure=np.ones((3, 3)))[1] + ndimage.label(~mask)[1]
    assert (many > 65_535) == expect_many
    for min_tissue, min_hole in [(1, 1), (4, 3), (40, 25)]:
        np.testing.assert_array_equal(
            _filter_areas(mask, min_tissue, min_hole), _reference(mask, min_tissue, min_hole)
        )


def test_area_filter_past_float32_exact_counts_matches_scipy():
    """An overview over 2**24 pixels (a raised ``max_mask_px``) still counts areas exactly.

    One piece of 17,219,697 pixels (odd, so float32 rounds it to 17,219,696) against a
    minimum of exactly its area: a float32 count would drop the whole slide.
    """
    mask = np.ones((4200, 4100), bool)
    holes = np.random.default_rng(3).choice(4198 * 4098, 303, replace=False)
    mask[1 + holes // 4098, 1 + holes % 4098] = False  # one-pixel holes, none on the border
    area = int(mask.sum())
    assert area > 2**24 and int(np.float32(area)) != area
    kept = _filter_areas(mask, area, 2)
    np.testing.assert_array_equal(kept, _reference(mask, area, 2))
    assert kept.all()
