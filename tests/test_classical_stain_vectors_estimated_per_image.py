"""Each image's own stain vectors (Macenko) are found, shrunk toward the published ones,
and unmix its stains better than the published vectors when its stains differ from them."""

from __future__ import annotations

import numpy as np
import pytest

from embedders.dense import ClassicalSegmenter, deconvolution, read_annotated_folder
from embedders.dense.deconvolution import (
    STAIN_VECTORS,
    estimated_stain_vectors,
    stain_concentrations,
)

# a lab's stains some degrees off the published haematoxylin and eosin
HAEMATOXYLIN = np.array([0.55, 0.76, 0.35]) / np.linalg.norm([0.55, 0.76, 0.35])
EOSIN = np.array([0.27, 0.90, 0.34]) / np.linalg.norm([0.27, 0.90, 0.34])


def _degrees(a: np.ndarray, b: np.ndarray) -> float:
    cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(cosine, -1, 1))))


def _stained(rng: np.random.Generator, side: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Random haematoxylin and eosin amounts (each on half the pixels) in the lab's vectors.

    Every channel of a pure stain's pixels is above the estimate's tissue threshold.
    """
    h, e = (
        rng.uniform(low, high, (side, side)) * (rng.random((side, side)) < 0.5)
        for low, high in ((0.3, 1.0), (0.7, 1.2))
    )
    od = h[..., None] * HAEMATOXYLIN + e[..., None] * EOSIN
    image = np.clip(np.round(255 * 10 ** (-od)), 1, 255).astype(np.uint8)
    return image, h


def test_an_images_own_stains_are_found():
    image, _ = _stained(np.random.default_rng(0))
    vectors = estimated_stain_vectors(image)
    assert _degrees(vectors[0], HAEMATOXYLIN) < 1.0
    assert _degrees(vectors[1], EOSIN) < 1.0
    assert _degrees(STAIN_VECTORS[0], HAEMATOXYLIN) > 6.0  # the published ones are off
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert abs(vectors[2] @ vectors[0]) < 1e-9 and abs(vectors[2] @ vectors[1]) < 1e-9


def test_the_weight_moves_the_vectors_from_the_published_to_the_images_own():
    image, _ = _stained(np.random.default_rng(1))
    published = estimated_stain_vectors(image, 0.0)
    assert np.allclose(published[:2], STAIN_VECTORS[:2])
    half = estimated_stain_vectors(image, 0.5)[0]
    own = estimated_stain_vectors(image, 1.0)[0]
    assert _degrees(published[0], half) > 1.0 and _degrees(half, own) > 1.0
    assert _degrees(half, published[0]) < _degrees(own, published[0])


def test_own_vectors_unmix_the_haematoxylin_more_faithfully():
    image, h = _stained(np.random.default_rng(2))
    errors = [
        float(np.abs(stain_concentrations(image, vectors)[0] - h).mean())
        for vectors in (None, estimated_stain_vectors(image))
    ]
    assert errors[1] < 0.2 * errors[0], errors


def test_the_sampled_estimate_is_the_estimate_from_every_pixel(shared_data, monkeypatch):
    """The estimate reads a grid of pixels; on real 1000² tiles it is that of all pixels."""
    tiles = [t for t in read_annotated_folder(shared_data / "nuclei") if t.image.size >= 3e6]
    sampled = [estimated_stain_vectors(t.image) for t in tiles[:3]]
    monkeypatch.setattr(deconvolution, "_SAMPLE", 10**9)
    for tile, vectors in zip(tiles[:3], sampled, strict=True):
        full = estimated_stain_vectors(tile.image)
        assert max(_degrees(a, b) for a, b in zip(vectors[:2], full[:2], strict=True)) < 1.0


def test_glass_falls_back_to_the_published_vectors():
    glass = np.full((64, 64, 3), 240, np.uint8)
    assert np.allclose(estimated_stain_vectors(glass)[:2], STAIN_VECTORS[:2])


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_weight_outside_zero_to_one_is_refused(weight):
    with pytest.raises(ValueError, match="weight"):
        estimated_stain_vectors(np.zeros((8, 8, 3), np.uint8), weight)
    with pytest.raises(ValueError, match="stain_weight"):
        ClassicalSegmenter(stain_weight=weight)
