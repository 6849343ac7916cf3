"""QC thresholds validate and decide; ``tile_qc`` takes batches of any size and checks input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tiling.qc import QC_COLUMNS, QCThresholds, background_mask, qc_keep, tile_qc


def metrics(**columns: list[float]) -> dict[str, np.ndarray]:
    return {name: np.asarray(values, dtype=np.float32) for name, values in columns.items()}


def test_defaults_are_documented_values_and_serialise():
    thresholds = QCThresholds()
    assert thresholds.to_dict() == {
        "min_tissue_fraction": 0.25,
        "max_pen_fraction": 0.05,
        "min_blur": None,
    }
    assert QCThresholds(**json.loads(json.dumps(thresholds.to_dict()))) == thresholds


@pytest.mark.parametrize(
    "bad",
    [
        {"min_tissue_fraction": 1.5},
        {"max_pen_fraction": -0.1},
        {"min_tissue_fraction": "0.3"},
        {"min_blur": float("nan")},
    ],
)
def test_invalid_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        QCThresholds(**bad)


def test_thresholds_are_keyword_only():
    with pytest.raises(TypeError):
        QCThresholds(0.5)  # type: ignore[misc]


def test_keep_applies_every_threshold():
    m = metrics(
        tissue_fraction=[0.9, 0.1, 0.9, 0.9, 0.25],
        pen_fraction=[0.0, 0.0, 0.2, 0.0, 0.05],
        blur=[500, 500, 500, 5, 500],
    )
    np.testing.assert_array_equal(qc_keep(m, QCThresholds()), [True, False, False, True, True])
    gated = QCThresholds(min_blur=100.0)
    np.testing.assert_array_equal(qc_keep(m, gated), [True, False, False, False, True])


def test_keep_names_missing_metrics():
    with pytest.raises(KeyError, match="blur"):
        qc_keep(metrics(tissue_fraction=[1.0], pen_fraction=[0.0]), QCThresholds(min_blur=1.0))


def test_batch_results_match_single_tiles():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    tiles[1] = 240  # glass
    batch = tile_qc(tiles)
    for i, tile in enumerate(tiles):
        single = tile_qc(tile[None])
        for name in QC_COLUMNS:
            assert batch[name][i] == pytest.approx(single[name][0], rel=1e-5)
    assert batch["background_fraction"][1] == 1.0 and batch["blur"][1] == 0.0
    total = batch["tissue_fraction"] + batch["background_fraction"] + batch["pen_fraction"]
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blur_is_the_laplacian_variance():
    # A grey checkerboard, against the 4-neighbour Laplacian written out in NumPy.
    y, x = np.mgrid[0:16, 0:16]
    grey = (100 + 40 * ((x + y) % 2)).astype(np.uint8)
    tile = np.repeat(grey[..., None], 3, axis=-1)
    g = grey.astype(float)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    assert tile_qc(tile[None])["blur"][0] == pytest.approx(lap.var(), rel=1e-4)


def test_empty_batch_gives_empty_columns():
    result = tile_qc(np.zeros((0, 16, 16, 3), np.uint8))
    assert all(v.shape == (0,) and v.dtype == np.float32 for v in result.values())


@pytest.mark.parametrize(
    "tiles",
    [
        np.zeros((16, 16, 3), np.uint8),
        np.zeros((2, 16, 16, 3), np.float32),
        np.zeros((1, 2, 2, 3), np.uint8),
    ],
)
def test_malformed_batches_are_refused(tiles):
    with pytest.raises(ValueError, match="tiles must"):
        tile_qc(tiles)


def test_pixel_masks_take_any_leading_shape():
    image = np.full((3, 4, 5, 3), 245, np.uint8)
    assert background_mask(image).shape == (3, 4, 5) and background_mask(image).all()
    assert background_mask(image.reshape(-1, 3)).shape == (60,)
