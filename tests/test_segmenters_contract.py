"""Every available registered segmenter honours the contract; unavailable ones say why."""

from __future__ import annotations

import numpy as np
import pytest

from embedders.dense import TileSegmentation, create_segmenter, list_segmenters
from embedders.dense.measure import WindowFrame, measure_window

# Options that make each entry cheap to build here (no downloads, tiny backbones).
OPTIONS = {"hovernet-head": {"backbone": "timm:test_vit", "mpp": 0.5, "width": 32}}
AVAILABLE = [row["name"] for row in list_segmenters() if row["available"]]


def test_unavailable_entries_give_a_reason_with_the_fix():
    for row in list_segmenters():
        assert row["available"] or "pip install" in row["reason"], row
    assert {"classical", "hovernet-head"} <= set(AVAILABLE)


@pytest.mark.parametrize("name", AVAILABLE)
def test_segmenter_returns_sequential_instances_and_measurable_cells(name, shared_data):
    from PIL import Image

    image = np.asarray(Image.open(shared_data / "nuclei" / "cpm15_image02.png").convert("RGB"))
    image = np.ascontiguousarray(image[:160, :192])
    segmenter = create_segmenter(name, **OPTIONS.get(name, {}))
    assert segmenter.mpp > 0 and segmenter.identity()["name"] == name
    result = segmenter.segment(image)
    assert isinstance(result, TileSegmentation)
    assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.int32
    ids = np.unique(result.labels)
    # 1..n without gaps (a random-init head may leave no background pixel at all)
    assert ids[ids > 0].tolist() == list(range(1, int(ids.max()) + 1))
    frame = WindowFrame((1000.0, 2000.0), 2.0, 2 * segmenter.mpp, (0, 0, 192, 160))
    cells = measure_window(result, image, frame)
    assert len(cells) <= result.n
    if len(cells):
        assert (cells.columns["x"] >= 1000).all() and (cells.columns["y"] >= 2000).all()
