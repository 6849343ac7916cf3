"""Handcrafted features are informative enough for MIL: real and synthetic evidence.

* real H&E crops (MoNuSeg, ``../shared/data/nuclei``) against the same crops blurred,
  replaced by glass or crossed by pen ink: a logistic regression trained on half the
  source images separates the other half;
* synthetic tissue with dense (tumour-like) against sparse nuclei, the demo's task:
  trained on one pair of slides, tested on another;
* the blob density tracks the hand-annotated nucleus counts of real crops.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch
from PIL import Image, ImageFilter

import embedders
from embedders.handcrafted import feature_names

CROP_PX = 448  # 0.25 µm/px crops, resized by the embedder to 224 px (~0.5 µm/px)


@pytest.fixture(scope="module")
def emb():
    return embedders.create("handcrafted")


def _auroc(score: np.ndarray, label: np.ndarray) -> float:
    pos, neg = score[label == 1], score[label == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def _fit_and_score(train_x, train_y, test_x) -> np.ndarray:
    """Logistic regression (L2, LBFGS) on standardised features; scores of ``test_x``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = torch.tensor((train_x - mean) / std)
    y = torch.tensor(train_y, dtype=torch.float32)
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.LBFGS(model.parameters(), max_iter=200)

    def closure():
        optimiser.zero_grad()
        logits = model(x)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss = loss + 1e-2 * model.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return model(torch.tensor((test_x - mean) / std))[:, 0].numpy()


@pytest.fixture(scope="module")
def monuseg(shared_data):
    """Real 448-px crops, their source image and their annotated nucleus counts."""
    crops, groups, counts = [], [], []
    paths = sorted((shared_data / "nuclei").glob("monuseg_*[0-9].png"))
    for group, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        instances = np.asarray(Image.open(path.with_suffix(".inst.png")))
        for y in (0, 1000 - CROP_PX):
            for x in (0, 1000 - CROP_PX):
                crops.append(image[y : y + CROP_PX, x : x + CROP_PX])
                window = instances[y : y + CROP_PX, x : x + CROP_PX]
                counts.append(len(np.unique(window[window > 0])))
                groups.append(group)
    return np.stack(crops), np.array(groups), np.array(counts)


def _degrade(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each crop blurred (out of focus), turned to glass, or crossed by a pen stroke."""
    out = []
    for i, crop in enumerate(crops):
        image = Image.fromarray(crop)
        kind = i % 3
        if kind == 0:
            image = image.filter(ImageFilter.GaussianBlur(6))
            out.append(np.asarray(image))
        elif kind == 1:
            glass = rng.normal(236, 4, crop.shape).clip(0, 255).astype(np.uint8)
            out.append(glass)
        else:
            ink = np.array([0.35, 0.55, 0.9]) * rng.uniform(0.6, 1.0)  # blue-green marker
            band = np.zeros(crop.shape[:2], bool)
            rows = np.arange(crop.shape[0])[:, None]
            cols = np.arange(crop.shape[1])[None]
            band[np.abs(rows - cols - rng.integers(-100, 100)) < crop.shape[0] // 3] = True
            inked = crop.astype(float)
            inked[band] *= ink
            out.append(inked.clip(0, 255).astype(np.uint8))
    return np.stack(out)


def test_real_crops_are_told_from_blurred_glass_and_pen_versions(emb, monuseg):
    crops, groups, _ = monuseg
    degraded = _degrade(crops, np.random.default_rng(0))
    features = emb.embed(np.concatenate([crops, degraded]))
    labels = np.repeat([1, 0], len(crops))
    image = np.concatenate([groups, groups])
    train = image < image.max() / 2  # held-out images, never seen in training
    scores = _fit_and_score(features[train], labels[train], features[~train])
    assert _auroc(scores, labels[~train]) > 0.9


def _synthetic_tiles(density: float, seed: int) -> np.ndarray:
    """128-µm tiles (512 px at 0.25 µm/px, the demo's 256 px at 0.5) of synthetic tissue.

    Windows overlap by half, are at least 90 % tissue, and are rendered as 256-px quarters.
    """
    from slideflow_core.synthetic import SyntheticSlideSpec
    from slideflow_core.synthetic.render import TileRenderer
    from slideflow_core.synthetic.scene import build_scene

    side = 2560
    spec = SyntheticSlideSpec(
        width_px=side,
        height_px=side,
        seed=seed,
        nuclei_per_mm2=density,
        n_tissue_regions=1,
        tissue_fraction=0.8,
        n_pen_marks=0,
        n_blur_regions=0,
        associated_images=False,
    )
    scene = build_scene(spec)
    renderer = TileRenderer(scene)

    def window(x: int, y: int) -> np.ndarray:
        rows = [
            np.concatenate(
                [np.asarray(renderer.render_region(x + dx, y + dy, 256, 256)) for dx in (0, 256)],
                axis=1,
            )
            for dy in (0, 256)
        ]
        return np.concatenate(rows)[..., :3]

    tiles = [
        window(x, y)
        for y in range(0, side - 511, 256)
        for x in range(0, side - 511, 256)
        if scene.truth.tissue.intersection(shapely.box(x, y, x + 512, y + 512)).area > 0.9 * 512**2
    ]
    assert len(tiles) >= 10
    return np.stack(tiles)


def test_dense_and_sparse_synthetic_tissue_separate_across_slides(emb):
    # The demo's classes: 4200 (dense) against 1200 (sparse) nuclei per mm².
    train = [(_synthetic_tiles(4200.0, 11), 1), (_synthetic_tiles(1200.0, 12), 0)]
    test = [(_synthetic_tiles(4200.0, 13), 1), (_synthetic_tiles(1200.0, 14), 0)]

    def stack(pairs):
        x = np.concatenate([emb.embed(tiles) for tiles, _ in pairs])
        y = np.concatenate([np.full(len(tiles), label) for tiles, label in pairs])
        return x, y

    (train_x, train_y), (test_x, test_y) = stack(train), stack(test)
    assert _auroc(_fit_and_score(train_x, train_y, test_x), test_y) > 0.9


def test_blob_density_tracks_annotated_nucleus_counts(emb, monuseg):
    crops, _, counts = monuseg
    features = emb.embed(crops)
    column = feature_names().index("blob_density_s2")
    assert np.corrcoef(features[:, column], counts)[0, 1] > 0.5


def test_features_are_deterministic_batch_independent_and_any_size(emb, monuseg):
    crops = monuseg[0][:3]
    small = np.stack([np.asarray(Image.fromarray(c).resize((96, 96))) for c in crops])
    many = np.concatenate([small] * 44)  # 132 tiles: more than one OpenCV channel chunk
    features = emb.embed(many)
    assert features.shape == (132, emb.dim) == (132, len(feature_names()))
    assert features.dtype == np.float32 and np.isfinite(features).all()
    # Batch composition changes float32 summation order only.
    np.testing.assert_allclose(features[129:132], emb.embed(small), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(features[:3], features[3:6])
    assert np.abs(features).max() < 10  # scaled to order one
