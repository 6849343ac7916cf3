"""On real H&E (CMU-1) tissue reads as tissue, and dark nuclei are not taken for ink."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.slides import open_slide
from slideflow_core.synthetic.scene import PEN_INKS
from tiling.qc import QCThresholds, pen_mask, qc_keep, tile_qc

TILE_PX = 256


@pytest.fixture(scope="module")
def tiles(cmu_svs):
    """Every whole 256-px tile of the slide, with its level-0 top-left corner."""
    with open_slide(cmu_svs) as slide:
        image = slide.read_region((0, 0), 0, slide.dimensions)
    height, width = image.shape[:2]
    corners = [
        (x, y)
        for y in range(0, height - TILE_PX + 1, TILE_PX)
        for x in range(0, width - TILE_PX + 1, TILE_PX)
    ]
    stack = np.stack([image[y : y + TILE_PX, x : x + TILE_PX] for x, y in corners])
    return np.array(corners), stack


def test_tissue_tiles_are_tissue_without_ink(tiles):
    corners, stack = tiles
    # The centre of the biopsy (dermis and epidermis) is tissue in every tile.
    central = (corners[:, 0] >= 700) & (corners[:, 0] <= 1500) & (corners[:, 1] >= 1400)
    metrics = tile_qc(stack[central])
    assert central.sum() >= 10
    assert np.median(metrics["tissue_fraction"]) > 0.85
    assert metrics["pen_fraction"].max() < 0.03
    assert qc_keep(metrics, QCThresholds()).all()


def test_nucleus_dense_tiles_are_not_pen(tiles):
    _, stack = tiles
    metrics = tile_qc(stack)
    # The tiles richest in dark (value < 90) pixels are the epidermis' packed nuclei.
    darkness = (stack.max(axis=-1) < 90).mean(axis=(1, 2))
    darkest = np.argsort(darkness)[-5:]
    assert darkness[darkest].min() > 0.15
    assert metrics["pen_fraction"][darkest].max() < 0.03


def test_only_the_dye_marked_margin_is_dropped_for_ink(tiles):
    # The biopsy's right margin (x >= 1536) carries teal tissue-marking dye: it is real ink
    # and must be caught, while tissue elsewhere stays well below the limit.
    corners, stack = tiles
    metrics = tile_qc(stack)
    limit = QCThresholds().max_pen_fraction
    tissue = metrics["tissue_fraction"] > 0.5
    margin = corners[:, 0] >= 1536
    assert (metrics["pen_fraction"][tissue & margin] > limit).sum() >= 2
    assert metrics["pen_fraction"][tissue & ~margin].max() < 0.6 * limit


@pytest.mark.parametrize("ink", sorted(PEN_INKS))
def test_ink_over_real_tissue_is_caught(tiles, ink):
    corners, stack = tiles
    central = (corners[:, 0] >= 700) & (corners[:, 0] <= 1500) & (corners[:, 1] >= 1400)
    inked = np.rint(stack[central] * np.array(PEN_INKS[ink])).astype(np.uint8)
    assert tile_qc(inked)["pen_fraction"].min() > 0.2
    glass = np.full((8, 8, 3), 243, np.uint8)
    assert pen_mask(np.rint(glass * np.array(PEN_INKS[ink])).astype(np.uint8)).all()
