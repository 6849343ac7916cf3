"""Stain normalisation at tiling time (stored pixels) and at load time (coordinates only)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from slideflow_core.slides import open_slide
from tiling import TilingConfig, create_normalizer, open_store, tile_slide


@pytest.fixture(scope="module")
def reference_png(cmu_svs, tmp_path_factory):
    with open_slide(cmu_svs) as slide:
        region = slide.read_region((600, 900), 0, (512, 512))
    # A bluer staining than the slide's own, so normalisation visibly moves colours.
    shifted = np.clip(region.astype(int) * [0.85, 0.9, 1.1], 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("ref") / "reference.png"
    Image.fromarray(shifted).save(path)
    return path


def test_stain_needs_a_reference():
    with pytest.raises(ValueError, match="stain_reference"):
        TilingConfig(stain="macenko")


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_tiles_are_normalised_towards_the_reference(cmu_svs, reference_png, tmp_path, method):
    config = {"mpp": 0.499, "tile_px": 128, "shard_tiles": 32}
    raw = open_store(tile_slide(cmu_svs, tmp_path / "raw.zarr", TilingConfig(**config)).store)
    normalised = open_store(
        tile_slide(
            cmu_svs,
            tmp_path / "norm.zarr",
            TilingConfig(**config, stain=method, stain_reference=str(reference_png)),
        ).store
    )
    assert normalised.info["stain"]["name"] == method
    keep = np.flatnonzero(raw.qc()["tissue_fraction"].to_numpy() > 0.5)[:20]
    before, after = raw.read_tiles(keep), normalised.read_tiles(keep)
    reference_mean = np.asarray(Image.open(reference_png)).reshape(-1, 3).mean(0)
    # Blue rises towards the reference, and pixels are otherwise plausible tiles.
    assert after[..., 2].mean() > before[..., 2].mean()
    assert abs(after[..., 2].mean() - reference_mean[2]) < abs(
        before[..., 2].mean() - reference_mean[2]
    )
    assert after.dtype == np.uint8
    assert after.shape == before.shape


def test_coordinates_only_stores_normalise_at_load_time(cmu_svs, reference_png, tmp_path):
    base = {"mpp": 0.499, "tile_px": 128, "shard_tiles": 32, "stain": "macenko", "codec": "zstd"}
    stored = open_store(
        tile_slide(
            cmu_svs, tmp_path / "px.zarr", TilingConfig(**base, stain_reference=str(reference_png))
        ).store
    )
    lazy = open_store(
        tile_slide(
            cmu_svs,
            tmp_path / "lazy.zarr",
            TilingConfig(**base, stain_reference=str(reference_png), store_pixels=False),
        ).store
    )
    picks = [0, 3, 9]
    np.testing.assert_array_equal(lazy.read_tiles(picks), stored.read_tiles(picks))
    # An explicit normaliser overrides the recorded one.
    identity = create_normalizer("reinhard").fit(lazy.read_tiles([3])[0])
    assert lazy.read_tiles([3], stain=identity).shape == (1, 128, 128, 3)
