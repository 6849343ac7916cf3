"""PLUTO-style FlexiViT: 16-px weights resampled at load to 8- or 32-px patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import embedders


@pytest.fixture(scope="module")
def p16(tmp_path_factory):
    """A random-init FlexiViT-S at its native 16-px patches, saved as safetensors."""
    emb = embedders.create("pluto_p16", weights="random")
    path = tmp_path_factory.mktemp("pluto") / "pluto_p16.safetensors"
    save_file({k: v.contiguous() for k, v in emb.network.state_dict().items()}, str(path))
    return emb, path


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize(("patch", "grid"), [(8, 28), (32, 7)])
def test_resampled_patches_give_the_token_grid_and_close_embeddings(p16, patch, grid):
    native, path = p16
    emb = embedders.create(f"pluto_p{patch}", weights=path)
    assert emb.network.patch_embed.proj.weight.shape == (384, 3, patch, patch)
    assert emb.identity()["weights"]["source"] == str(path)
    # A constant-colour tile: FlexiViT's pseudo-inverse resize keeps each token's patch
    # response, so the embedding stays close to the native one.
    tile = np.empty((1, 224, 224, 3), np.uint8)
    tile[...] = (200, 120, 170)
    batch = emb.preprocess(tile)
    with torch.inference_mode():
        tokens = emb.network.forward_features(batch)
    assert tokens.shape == (1, 1 + grid * grid, 384)
    ours, reference = emb.forward(batch).numpy()[0], native.embed(tile)[0]
    assert np.isfinite(ours).all()
    assert _cosine(ours, reference) > 0.9
