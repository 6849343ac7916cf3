"""Tile heatmaps are drawn over the slide thumbnail with a colour bar, with PIL only."""

from __future__ import annotations

import numpy as np
import pytest
from overlay_stores import make_store
from PIL import Image

from slideflow_core.slides import open_slide
from slideflow_core.viewer import HeatmapError, colorize, write_heatmap
from slideflow_core.viewer.heatmap import paint_tiles

VIRIDIS_LOW, VIRIDIS_HIGH = (68, 1, 84), (253, 231, 37)


def test_colours_span_the_map_and_nan_is_transparent():
    rgba = colorize(np.array([0.0, 1.0, np.nan]), 0.0, 1.0)
    assert tuple(rgba[0, :3]) == VIRIDIS_LOW and tuple(rgba[1, :3]) == VIRIDIS_HIGH
    assert rgba[2, 3] == 0 and rgba[0, 3] == 255


def test_overlapping_tiles_average():
    coords = np.array([[0, 0], [5, 0]])
    painted = paint_tiles(coords, 10, np.array([1.0, 3.0]), scale=1.0, shape=(10, 20))
    assert painted[0, 2] == 1 and painted[0, 7] == 2 and painted[0, 12] == 3
    assert np.isnan(painted[0, 18])


def test_attention_heatmap_over_the_real_slide_thumbnail(tmp_path, cmu_svs):
    store = make_store(tmp_path, grid=(8, 11), slide_path=cmu_svs, dimensions=(2220, 2967))
    out = write_heatmap(store, tmp_path / "heatmap.png", run="r1", max_px=512, alpha=1.0)
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    with open_slide(cmu_svs) as slide:
        thumb = slide.thumbnail(512)
    height, width = thumb.shape[:2]
    title = image.shape[0] - height
    assert title > 0 and image.shape[1] > width + 20  # a title row and a colour bar
    scale = width / 2220
    last = (int((7 * 256 + 128) * scale), int((10 * 256 + 128) * scale))  # highest attention
    assert tuple(image[title + last[1], last[0]]) == VIRIDIS_HIGH
    unscored = (int((2 * 256 + 128) * scale), int(128 * scale))  # tile 2 has no score
    np.testing.assert_array_equal(
        image[title + unscored[1], unscored[0]], thumb[unscored[1], unscored[0]]
    )
    bar = image[title:, width:]
    assert (np.abs(bar - VIRIDIS_HIGH).sum(axis=2) < 30).any()  # top of the bar
    assert (np.abs(bar - VIRIDIS_LOW).sum(axis=2) < 30).any()  # bottom of the bar


def test_qc_heatmap_without_the_slide_falls_back_to_white(tmp_path):
    store = make_store(tmp_path, run=None)
    out = write_heatmap(store, tmp_path / "qc.png", column="tissue_fraction", max_px=200, alpha=0.5)
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] > 100 and (image == 255).all(axis=2).any()
    with pytest.raises(HeatmapError, match="no per-tile column 'nope'"):
        write_heatmap(store, tmp_path / "x.png", column="nope")
