"""The fast post-processing steps give exactly what the library calls they replace.

``flood`` floods each connected part of the mask on its own (only parts holding
several markers) and ``fill_holes`` labels the background once; both must equal one
``skimage.segmentation.watershed`` / ``scipy.ndimage.binary_fill_holes`` call, on a
real tile's haematoxylin and on markers that repeat a label or fall outside the mask.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from embedders.dense import read_annotated_folder
from embedders.dense.deconvolution import stain_concentrations
from embedders.dense.morphology import clean_mask, fill_holes, flood, peak_markers


def _real_mask_and_height(shared_data) -> tuple[np.ndarray, np.ndarray]:
    (tile,) = read_annotated_folder(shared_data / "nuclei", ids=["cpm15_image07"])
    h, _ = stain_concentrations(tile.image)
    mask = clean_mask(h > 0.7 * threshold_otsu(h), 2)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    return mask, cv2.GaussianBlur(distance, (0, 0), 2)


def test_flood_equals_one_watershed_on_a_real_tile(shared_data):
    mask, height = _real_mask_and_height(shared_data)
    markers = peak_markers(height, radius_px=10, min_height=2)
    assert markers.max() > 50
    odd = markers.copy()
    rng = np.random.default_rng(0)
    odd[rng.random(odd.shape) < 0.001] = 7  # label 7 in several parts, some outside the mask
    for seeds in (markers, odd):
        expected = watershed(-height, seeds, mask=mask)
        assert np.array_equal(flood(-height, seeds, mask), expected)


def test_flood_of_an_empty_mask_or_no_markers_is_empty():
    mask = np.zeros((20, 20), bool)
    assert not flood(np.zeros((20, 20)), np.ones((20, 20), np.int32), mask).any()
    mask[5:10, 5:10] = True
    assert not flood(np.zeros((20, 20)), np.zeros((20, 20), np.int32), mask).any()


def test_fill_holes_equals_scipy(shared_data):
    mask, _ = _real_mask_and_height(shared_data)
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    edge = ring.copy()
    edge[10:20, 10] = False
    edge[15, :11] = False  # the hole opens onto the border: not a hole
    for m in (mask, ~mask, ring, edge, np.zeros((4, 4), bool), np.ones((4, 4), bool)):
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
