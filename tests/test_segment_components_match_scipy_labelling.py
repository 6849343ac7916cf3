"""``components`` (OpenCV) labels a mask exactly as ``scipy.ndimage.label`` does."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from embedders.dense import read_annotated_folder
from embedders.dense.deconvolution import stain_concentrations
from embedders.dense.morphology import components


def test_components_equal_scipy_label_on_a_real_tile_and_its_background(shared_data):
    (tile,) = read_annotated_folder(shared_data / "nuclei", ids=["cpm15_image07"])
    h, _ = stain_concentrations(tile.image)
    for mask in (h > 0.3, ~(h > 0.3), h[::2, 1::3] > 0.5):  # a strided view too
        labels, n = components(mask)
        expected, n_expected = ndimage.label(mask)
        assert n == n_expected > 10
        assert labels.dtype == np.int32 and np.array_equal(labels, expected)


def test_an_empty_mask_has_no_components():
    labels, n = components(np.zeros((5, 7), bool))
    assert n == 0 and not labels.any()
