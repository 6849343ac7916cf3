"""Every registered embedder builds with the documented shape; small ones really run.

A contract test parametrised over the registry: registering a model is enough for it
to be checked here (parameter count and output dimension on the ``meta`` device; a
real seeded random-init forward on the CPU for the small ones).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedders
from embedders.builders import build_network
from embedders.network import pool_tokens

ALL = embedders.model_names()
# Real CPU forwards in the default suite; the rest (more tokens or parameters) are slow.
SMALL = ["handcrafted", "resnet50-trunc", "dinov2_vits14_reg", "pluto_p16", "pluto_p32"]
LARGER = ["dinov2_vits14", "pluto_p8", "dinov2_vitb14", "phikon", "lunit-dino-s8"]
BIG_PARAMS = 100_000_000
# Output dimensions and token layouts as published on the model cards (REFERENCE.md).
CARD_DIMS = {
    "handcrafted": None,
    "resnet50-trunc": 1024,
    "dinov2_vits14": 384,
    "dinov2_vits14_reg": 384,
    "dinov2_vitb14": 768,
    "dinov2_vitb14_reg": 768,
    "dinov2_vitl14": 1024,
    "dinov2_vitl14_reg": 1024,
    "pluto_p8": 384,
    "pluto_p16": 384,
    "pluto_p32": 384,
    "uni": 1024,
    "uni2-h": 1536,
    "virchow2": 2560,
    "h-optimus-0": 1536,
    "h-optimus-1": 1536,
    "gigapath": 1536,
    "phikon": 768,
    "phikon-v2": 1024,
    "lunit-dino-s8": 384,
}
# Class + register tokens in front of the patch tokens.
PREFIX_TOKENS = {
    "uni2-h": 9,
    "virchow2": 5,
    "h-optimus-0": 5,
    "h-optimus-1": 5,
    **{f"dinov2_vit{size}14_reg": 5 for size in "sbl"},
}


def test_every_entry_has_a_published_dimension():
    assert set(ALL) == set(CARD_DIMS)


def _by_size(name: str):
    big = embedders.get_card(name).params > BIG_PARAMS
    return pytest.param(name, marks=pytest.mark.slow) if big else name


@pytest.fixture(scope="module")
def small_embedders():
    return {
        name: embedders.create(name, weights=None if name == "handcrafted" else "random")
        for name in SMALL
    }


@pytest.mark.parametrize("name", [_by_size(n) for n in ALL if n != "handcrafted"])
def test_entry_builds_on_meta_with_card_params_and_dim(name):
    card = embedders.get_card(name)
    assert card.dim == CARD_DIMS[name]
    with torch.device("meta"):
        network = build_network(card)
        assert sum(p.numel() for p in network.parameters()) == card.params
        x = torch.empty(2, 3, card.input_px, card.input_px)
        if card.tokens:
            tokens = network.forward_features(x)
            grid = card.input_px // card.patch_px
            prefix = PREFIX_TOKENS.get(name, 1)
            assert network.num_prefix_tokens == prefix
            assert tokens.shape == (2, prefix + grid * grid, card.width)
            out = pool_tokens(tokens, card.pooling, network.num_prefix_tokens)
        else:
            out = network(x)
    assert out.shape == (2, card.dim)


def _check_embeds_tiles(emb):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    batch = emb.preprocess(tiles)
    assert batch.device.type == "cpu" and batch.is_contiguous()
    assert tuple(batch.shape) == (2, 3, emb.input_px, emb.input_px)
    out = emb.forward(batch)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert tuple(out.shape) == (2, emb.dim)
    assert torch.isfinite(out).all()
    again = emb.embed(tiles)
    np.testing.assert_array_equal(again, out.numpy())  # deterministic
    assert not np.allclose(again[0], again[1])  # different tiles, different features


@pytest.mark.parametrize("name", SMALL)
def test_small_entry_embeds_tiles_on_cpu(name, small_embedders):
    _check_embeds_tiles(small_embedders[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGER)
def test_larger_entry_embeds_tiles_on_cpu(name):
    _check_embeds_tiles(embedders.create(name, weights="random"))


@pytest.mark.parametrize("name", SMALL)
def test_identity_is_json_ready_and_names_its_source(name, small_embedders):
    import json

    emb = small_embedders[name]
    identity = json.loads(json.dumps(emb.identity()))
    assert identity["id"] == emb.id == name
    assert identity["dim"] == emb.dim
    assert identity["precision"] == "fp32"
    expected = "none" if name == "handcrafted" else "random-init"
    assert identity["weights"]["source"] == expected
    assert "torch" in identity["packages"]


def test_random_init_is_seeded_so_two_processes_agree(small_embedders):
    a = small_embedders["pluto_p32"]
    b = embedders.create("pluto_p32", pretrained=False)
    for (ka, va), (kb, vb) in zip(
        a.network.state_dict().items(), b.network.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)


def test_pooling_override_changes_dim_and_id():
    emb = embedders.create("pluto_p32", weights="random", pooling="cls+mean")
    assert emb.dim == 768 and emb.id == "pluto_p32.cls-mean"
    tiles = np.full((1, 224, 224, 3), 200, np.uint8)
    assert emb.embed(tiles).shape == (1, 768)
    with pytest.raises(ValueError, match="cannot pool"):
        embedders.create("resnet50-trunc", weights="random", pooling="cls")


def test_any_timm_model_by_name():
    emb = embedders.create("timm:resnet18", weights="random")
    assert emb.id == "timm.resnet18" and emb.dim == 512
    out = emb.embed(np.zeros((1, 64, 64, 3), np.uint8))
    assert out.shape == (1, 512)
    with pytest.raises(KeyError, match="unknown timm model"):
        embedders.create("timm:not_a_model_at_all")


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match="did you mean"):
        embedders.create("dinov2_vits14_regs")


def test_list_models_shows_metadata_and_weight_sources():
    rows = {row["name"]: row for row in embedders.list_models()}
    assert set(rows) == set(ALL)
    assert rows["uni"]["gated"] is True and rows["uni"]["hf_id"] == "MahmoodLab/UNI"
    assert rows["virchow2"]["dim"] == 2560 and rows["virchow2"]["pooling"] == "cls+mean"
    assert rows["handcrafted"]["weights"] == "none needed"
    assert rows["pluto_p16"]["weights"].startswith("local file only")
    assert all(row["available"] for row in rows.values())
