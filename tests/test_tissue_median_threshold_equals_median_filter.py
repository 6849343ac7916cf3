"""The tissue detector's thresholded median equals OpenCV's median filter, thresholded.

``median(window) > t`` holds exactly when more than half of the window exceeds ``t``,
which the detector counts with a box sum instead of filtering; checked on noise and on
smooth scores of odd shapes (the replicated border included), for every kernel a user
may set, and on the saturation of the real CMU overview.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slideflow_core.slides import open_slide
from tiling.reader import read_thumbnail
from tiling.tissue import _median_above, _saturation


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9, 15, 21])
def test_median_above_equals_median_blur_then_threshold(kernel):
    rng = np.random.default_rng(kernel)
    for trial in range(12):
        height, width = (int(v) for v in rng.integers(1, 200, 2))
        score = (rng.random((height, width)) * 40).astype(np.uint8)
        if trial % 2:
            score = cv2.GaussianBlur(score, (0, 0), 2)
        threshold = float(rng.integers(0, 40))
        expected = cv2.medianBlur(score, kernel) > threshold
        np.testing.assert_array_equal(_median_above(score, kernel, threshold), expected)


def test_median_above_on_a_real_overview(cmu_svs):
    with open_slide(cmu_svs) as slide:
        overview = read_thumbnail(slide, 1024)
    saturation = _saturation(overview)
    for threshold in (8.0, 20.0, 35.5):
        expected = cv2.medianBlur(saturation, 7) > threshold
        got = _median_above(saturation, 7, threshold)
        assert 0.05 < got.mean() < 0.95  # a mask with tissue and glass, not a trivial one
        np.testing.assert_array_equal(got, expected)
