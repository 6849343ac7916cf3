"""``ring_labels`` gives the same rings to small and to very large label numbers."""

from __future__ import annotations

import cv2
import numpy as np

from embedders.dense.morphology import ring_labels


def test_rings_are_the_same_past_the_16_bit_labels():
    labels = np.zeros((120, 160), np.int32)
    for label, (x, y) in enumerate([(30, 30), (48, 30), (110, 80)], start=1):
        cv2.circle(labels, (x, y), 10, label, -1)  # the first two touch
    small = ring_labels(labels, 3)
    shifted = np.where(labels > 0, labels + 70_000, 0)
    large = ring_labels(shifted, 3)
    assert set(np.unique(small)) == {0, 1, 2, 3}
    assert np.array_equal(large, np.where(small > 0, small + 70_000, 0))
    assert not small[labels > 0].any()  # rings lie outside the instances
    assert np.count_nonzero(small == 3) > 2 * np.pi * 10 * 2  # about 3 px wide
