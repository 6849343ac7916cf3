"""The learned segmenter trains end to end, resumes a stopped run exactly and reloads exactly.

Two optimiser steps on small crops of a real tile stand in for a training run (the
benchmark trains for real): what is checked is the plumbing a user relies on: the
weights and card, a stopped run picking up from its checkpoint, fine-tuning from
earlier weights, PanNuke folders, and one clear error for weights of another kind.
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

from embedders.dense import (
    AnnotationError,
    SegmenterTrainConfig,
    create_segmenter,
    read_annotated_folder,
    read_training_data,
    train_segmenter,
)
from embedders.dense.fit import checkpoint_path
from embedders.dense.nucleus_net import NucleusWeightsError, card_path
from embedders.dense.train import hovernet_losses

TINY = {"steps": 4, "batch_size": 2, "crop_px": 64, "width": 8, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def tiles(shared_data):
    tile = read_annotated_folder(shared_data / "nuclei", ids=["monuseg_TCGA-21-5784-01Z-00-DX1"])[0]
    crops = []
    for index, (y, x) in enumerate([(0, 0), (200, 300)]):
        window = (slice(y, y + 160), slice(x, x + 160))
        crops.append(
            type(tile)(
                id=f"crop{index}",
                image=np.ascontiguousarray(tile.image[window]),
                instances=np.ascontiguousarray(tile.instances[window]),
                mpp=tile.mpp,
            )
        )
    return crops


def test_weights_and_card_reload_to_the_same_maps(tiles, tmp_path):
    out = tmp_path / "nuclei.safetensors"
    result = train_segmenter(
        tiles[:1], out=out, validation=tiles[1:], config=SegmenterTrainConfig(**TINY)
    )
    assert len(result.history) == 4 and all(np.isfinite(h["loss"]) for h in result.history)
    assert {"dice", "aji", "pq", "f1", "false_per_mm2"} <= set(result.validation)
    card = json.loads(card_path(out).read_text())
    assert card["data"]["train_tiles"][0]["id"] == "crop0"
    assert card["training"]["steps_done"] == 4 and card["model"]["mpp"] == 0.25
    assert card["validation"] == result.validation
    again = create_segmenter("learned", weights=out)
    a, b = result.segmenter.predict_maps(tiles[1].image), again.predict_maps(tiles[1].image)
    np.testing.assert_array_equal(a["np"], b["np"])
    assert a["np"].shape == (160, 160) and a["hv"].shape == (2, 160, 160)
    assert again.segment(tiles[1].image).labels.dtype == np.int32
    assert not checkpoint_path(out).exists()


class _StoppedError(RuntimeError):
    """Stands for a killed process."""


def _stopping_at_step_three() -> mock._patch:
    calls = {"n": 0}

    def losses(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _StoppedError
        return hovernet_losses(*args, **kwargs)

    return mock.patch("embedders.dense.fit.hovernet_losses", losses)


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_result(tiles, tmp_path):
    config = SegmenterTrainConfig(**(TINY | {"checkpoint_every": 2}))
    whole = train_segmenter(tiles, out=tmp_path / "whole.safetensors", config=config)
    out = tmp_path / "resumed.safetensors"
    with _stopping_at_step_three(), pytest.raises(_StoppedError):
        train_segmenter(tiles, out=out, config=config)
    assert checkpoint_path(out).exists() and not out.exists()
    resumed = train_segmenter(tiles, out=out, config=config)
    assert [h["step"] for h in resumed.history] == [0, 1, 2, 3]
    np.testing.assert_allclose(
        [h["loss"] for h in resumed.history], [h["loss"] for h in whole.history], rtol=1e-4
    )


def test_a_checkpoint_of_other_tiles_is_refused(tiles, tmp_path):
    config = SegmenterTrainConfig(**(TINY | {"checkpoint_every": 2}))
    out = tmp_path / "nuclei.safetensors"
    with _stopping_at_step_three(), pytest.raises(_StoppedError):
        train_segmenter(tiles, out=out, config=config)
    with pytest.raises(NucleusWeightsError, match="different training run"):
        train_segmenter(tiles[:1], out=out, config=config)


def test_fine_tuning_starts_from_earlier_weights(tiles, tmp_path):
    first = tmp_path / "first.safetensors"
    train_segmenter(tiles, out=first, config=SegmenterTrainConfig(**TINY))
    tuned = train_segmenter(
        tiles[1:],
        out=tmp_path / "tuned.safetensors",
        init=first,
        config=SegmenterTrainConfig(**TINY),
    )
    assert tuned.segmenter.card["training"]["init"] == str(first)
    with pytest.raises(AnnotationError, match="same mpp"):
        train_segmenter(
            tiles,
            out=tmp_path / "other.safetensors",
            init=first,
            config=SegmenterTrainConfig(**(TINY | {"mpp": 0.5})),
        )


def test_a_pannuke_folder_trains_a_typed_segmenter(tiles, tmp_path):
    instances = tiles[0].instances[:64, :64]
    masks = np.zeros((2, 64, 64, 6), np.int32)
    masks[:, ..., 0] = np.where(instances % 2 == 1, instances, 0)
    masks[:, ..., 1] = np.where(instances % 2 == 0, instances, 0)
    masks[..., 5] = instances == 0
    np.save(tmp_path / "images.npy", np.stack([tiles[0].image[:64, :64]] * 2))
    np.save(tmp_path / "masks.npy", masks)
    loaded = read_training_data(tmp_path)
    assert len(loaded) == 2 and loaded[0].classes[0] == "neoplastic"
    result = train_segmenter(
        loaded, out=tmp_path / "typed.safetensors", config=SegmenterTrainConfig(**TINY)
    )
    found = result.segmenter.segment(tiles[0].image[:96, :96])
    assert found.classes == loaded[0].classes
    assert found.probabilities is not None and found.probabilities.shape == (found.n, 5)


def test_weights_of_another_kind_are_one_clear_error(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(NucleusWeightsError, match="not a learned-segmenter file"):
        create_segmenter("learned", weights=tmp_path / "other.safetensors")
    with pytest.raises(NucleusWeightsError, match="not found"):
        create_segmenter("learned", weights=tmp_path / "missing.safetensors")
