"""Weights: safetensors/.pth round trips, pickle refusal, readable key diffs, offline errors."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import embedders
from embedders.keymaps import hf_vit_to_timm
from embedders.weights import WeightsError

MODEL = "pluto_p16"  # a small ViT whose weights are stored at their native patch size
TILES = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference():
    """Features of a random-init network (not the seeded one) and its state dict."""
    torch.manual_seed(1234)
    emb = embedders.create(MODEL, weights="random")
    with torch.no_grad():
        for p in emb.network.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # differ from the seeded random init
    state = {k: v.clone().contiguous() for k, v in emb.network.state_dict().items()}
    return emb.embed(TILES), state


def test_safetensors_round_trip_gives_identical_features(tmp_path, reference):
    features, state = reference
    path = tmp_path / "pluto.safetensors"
    save_file(state, str(path))
    loaded = embedders.create(MODEL, weights=path)
    np.testing.assert_array_equal(loaded.embed(TILES), features)
    record = loaded.identity()["weights"]
    assert record["source"] == str(path) and len(record["sha256"]) == 64


def test_pth_state_dict_with_wrapper_prefix_loads(tmp_path, reference):
    features, state = reference
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = embedders.create(MODEL, weights=str(path))
    np.testing.assert_array_equal(loaded.embed(TILES), features)


def test_pickle_bearing_checkpoint_is_refused(tmp_path, reference):
    _, state = reference
    path = tmp_path / "evil.pth"
    # DINO/CLAM-style checkpoints often carry their argparse namespace.
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightsError, match="refusing to unpickle") as info:
        embedders.create(MODEL, weights=path)
    assert "safetensors" in str(info.value)


def test_wrong_keys_give_a_readable_diff(tmp_path, reference):
    _, state = reference
    broken = dict(state)
    broken["blocks.0.attn.qkv_renamed.weight"] = broken.pop("blocks.0.attn.qkv.weight")
    broken["head.weight"] = torch.zeros(2, 384)
    broken["norm.weight"] = torch.ones(100)
    path = tmp_path / "broken.safetensors"
    save_file(broken, str(path))
    with pytest.raises(WeightsError) as info:
        embedders.create(MODEL, weights=path)
    text = str(info.value)
    assert "1 missing, 2 unexpected, 1 mis-shaped" in text
    assert "missing from checkpoint: blocks.0.attn.qkv.weight" in text
    assert "unexpected in checkpoint: blocks.0.attn.qkv_renamed.weight" in text
    assert "norm.weight: checkpoint (100,) vs model (384,)" in text


def test_missing_weights_say_how_to_provide_them():
    with pytest.raises(WeightsError, match="needs weights") as info:
        embedders.create("uni")
    assert "MahmoodLab/UNI" in str(info.value) and "huggingface-cli login" in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        embedders.create("uni", weights="/nowhere/uni.bin")


def test_offline_hub_without_cache_names_model_file_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(WeightsError) as info:
        embedders.create("uni", weights="MahmoodLab/UNI")
    text = str(info.value)
    assert "'uni'" in text and "MahmoodLab/UNI/pytorch_model.bin" in text
    assert "HF_HUB_OFFLINE" in text and "weights='/path/to/pytorch_model.bin'" in text
    assert str(tmp_path / "empty-hf-home") in text


def _timm_to_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Hugging Face ViTModel layout of a timm ViT state dict (what Phikon ships)."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
        "pooler.dense.weight": torch.zeros(4, 4),
    }
    names = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attn.proj": "attention.output.dense",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    for i in blocks:
        for kind in ("weight", "bias"):
            for ours, theirs in names.items():
                out[f"encoder.layer.{i}.{theirs}.{kind}"] = state[f"blocks.{i}.{ours}.{kind}"]
            q, k, v = state[f"blocks.{i}.attn.qkv.{kind}"].chunk(3)
            for part, value in (("query", q), ("key", k), ("value", v)):
                out[f"encoder.layer.{i}.attention.attention.{part}.{kind}"] = value
    return out


def test_hugging_face_vit_layout_maps_back_to_timm_exactly(reference):
    _, state = reference
    no_embed_class = {k: v for k, v in state.items() if k != "reg_token"}
    mapped = hf_vit_to_timm(_timm_to_hf_vit(no_embed_class))
    assert set(mapped) == set(no_embed_class)
    for key, value in no_embed_class.items():
        assert torch.equal(mapped[key], value), key
