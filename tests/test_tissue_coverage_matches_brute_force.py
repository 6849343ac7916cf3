"""``TissueMask.coverage`` (summed-area table) equals a direct per-pixel overlap sum."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon

from tiling.tissue import TissueMask


def make_mask(mask: np.ndarray, downsample: tuple[float, float]) -> TissueMask:
    return TissueMask(
        mask=mask, downsample=downsample, polygons=MultiPolygon(), detector="test", params={}
    )


def brute_force(mask: np.ndarray, downsample: tuple[float, float], box: np.ndarray) -> float:
    """Tissue share of one level-0 box: each mask pixel weighted by its overlap with it."""
    dx, dy = downsample
    x0, y0, w, h = box.astype(float)
    left, top = np.arange(mask.shape[1]) * dx, np.arange(mask.shape[0]) * dy
    overlap_x = np.clip(np.minimum(x0 + w, left + dx) - np.maximum(x0, left), 0, None)
    overlap_y = np.clip(np.minimum(y0 + h, top + dy) - np.maximum(y0, top), 0, None)
    return float((mask * overlap_y[:, None] * overlap_x[None, :]).sum() / (w * h))


@pytest.mark.parametrize("downsample", [(16.0, 16.0), (13.7, 9.25)])
def test_random_boxes_match_brute_force(downsample):
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) < 0.4
    width, height = 53 * downsample[0], 37 * downsample[1]
    # Boxes of all sizes, many reaching past the slide's edges.
    xy = rng.uniform(-0.2, 1.1, (300, 2)) * (width, height)
    size = rng.uniform(1, 0.4 * width, (300, 2))
    boxes = np.column_stack([xy, size]).astype(int)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], 1)
    got = make_mask(mask, downsample).coverage(boxes)
    expected = [brute_force(mask, downsample, box) for box in boxes]
    assert got.dtype == np.float32 and got.shape == (300,)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_integer_downsample_agrees_with_an_upsampled_mask():
    rng = np.random.default_rng(1)
    mask = rng.random((20, 30)) < 0.5
    level0 = np.kron(mask, np.ones((8, 8), dtype=bool))
    boxes = np.array([[0, 0, 240, 160], [5, 7, 64, 32], [100, 33, 3, 90], [239, 159, 1, 1]])
    expected = [level0[y : y + h, x : x + w].mean() for x, y, w, h in boxes]
    np.testing.assert_allclose(make_mask(mask, (8.0, 8.0)).coverage(boxes), expected, atol=1e-6)


def test_outside_the_slide_counts_as_no_tissue():
    tissue = make_mask(np.ones((10, 10), dtype=bool), (4.0, 4.0))
    boxes = np.array([[-20, 0, 40, 40], [100, 100, 8, 8], [0, 0, 40, 40]])
    np.testing.assert_allclose(tissue.coverage(boxes), [0.5, 0.0, 1.0])


def test_empty_boxes_are_refused():
    tissue = make_mask(np.ones((4, 4), dtype=bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        tissue.coverage(np.array([[0, 0, 0, 3]]))
