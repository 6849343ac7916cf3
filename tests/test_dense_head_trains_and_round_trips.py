"""The learned dense head trains on instance masks and round-trips through safetensors.

A tiny timm ViT (``timm:test_vit``, random init) stands in for a foundation model so
the test runs in seconds; the benchmark trains on ``dinov2_vits14``.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedders.dense import (
    DenseTrainConfig,
    create_segmenter,
    load_dense_head,
    pannuke_tiles,
    read_annotated_folder,
    train_dense_head,
)
from embedders.dense.hovernet_post import hovernet_instances, hv_targets
from embedders.dense.learned import DenseHeadError

TINY = {"backbone": "timm:test_vit", "mpp": 0.5, "width": 32}


@pytest.fixture(scope="module")
def tile(shared_data):
    return read_annotated_folder(shared_data / "nuclei", ids=["cpm15_image01"])[0]


@pytest.mark.slow
def test_training_lowers_the_loss(tile):
    config = DenseTrainConfig(steps=12, batch_size=2, lr=3e-3)
    _, history = train_dense_head([tile], config=config, **TINY)
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_trained_weights_reload_exactly(tile, tmp_path):
    config = DenseTrainConfig(steps=2, batch_size=2)
    head, history = train_dense_head(
        [tile], config=config, out=tmp_path / "head.safetensors", **TINY
    )
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    again = create_segmenter("hovernet-head", weights=tmp_path / "head.safetensors")
    assert again.identity()["backbone"] == "timm:test_vit" and again.mpp == 0.5
    crop = tile.image[:200, :230]
    a, b = head.predict_maps(crop), again.predict_maps(crop)
    assert a["np"].shape == (200, 230) and a["hv"].shape == (2, 200, 230)
    np.testing.assert_array_equal(a["np"], b["np"])
    result = again.segment(crop)
    assert result.labels.shape == (200, 230) and result.labels.dtype == np.int32


def test_pannuke_arrays_train_a_typed_head(tile):
    instances = tile.instances[:192, :192]
    masks = np.zeros((2, 192, 192, 6), np.int32)
    masks[0, ..., 0] = np.where(instances % 2 == 1, instances, 0)  # odd ids: neoplastic
    masks[0, ..., 1] = np.where(instances % 2 == 0, instances, 0)
    masks[1, ..., 2] = instances
    masks[..., 5] = instances == 0
    tiles = pannuke_tiles(np.stack([tile.image[:192, :192]] * 2), masks, mpp=0.5)
    assert tiles[0].n_nuclei == len(np.unique(instances)) - 1
    head, _ = train_dense_head(tiles, config=DenseTrainConfig(steps=2, batch_size=2), **TINY)
    assert head.classes == ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
    found = head.segment(tile.image[:192, :192])
    assert found.probabilities is not None
    assert found.probabilities.shape == (found.n, 5)


def test_hovernet_post_processing_splits_touching_nuclei_from_perfect_maps():
    truth = np.zeros((60, 80), np.int32)
    yy, xx = np.mgrid[:60, :80]
    truth[(yy - 30) ** 2 + (xx - 28) ** 2 < 12**2] = 1
    truth[((yy - 30) ** 2 + (xx - 50) ** 2 < 12**2) & (truth == 0)] = 2  # touches nucleus 1
    labels = hovernet_instances((truth > 0).astype(np.float32), hv_targets(truth))
    assert labels.max() == 2
    for k in (1, 2):
        overlap = np.bincount(labels[truth == k], minlength=3)[1:]
        assert overlap.max() / (truth == k).sum() > 0.85


def test_weights_of_another_format_are_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something else"})
    with pytest.raises(DenseHeadError, match="not a dense-head file"):
        load_dense_head(path)
    with pytest.raises(DenseHeadError, match="not found"):
        load_dense_head(tmp_path / "missing.safetensors")
