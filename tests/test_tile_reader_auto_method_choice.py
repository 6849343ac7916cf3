"""``method="auto"`` decodes JPEG-tiled TIFF directly and falls back to region reads otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.slides import open_slide
from tiling.native import find_jpeg_level
from tiling.reader import TileReader

DEFLATE_TIFF = "pathml_small_HE_levels.tiff"  # generic tiled TIFF, deflate, no calibration


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_auto_uses_native_on_aperio_jpeg(cmu_svs, backend):
    with open_slide(cmu_svs, backend=backend) as slide:
        reader = TileReader(slide, level=0, read_px=256, tile_px=256)
    assert reader.method == "native"
    assert "identically" in reader.method_reason


def test_auto_uses_native_on_synthetic_levels(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        for level in range(slide.level_count):
            reader = TileReader(slide, level=level, read_px=64, tile_px=64)
            assert reader.method == "native", reader.method_reason


def test_aperio_rgb_jpeg_is_decoded_without_colour_transform(cmu_svs):
    with open_slide(cmu_svs) as slide:
        level, why = find_jpeg_level(str(cmu_svs), slide.dimensions)
    assert level is not None, why
    assert (level.tile_width, level.tile_height, level.colorspace) == (240, 240, "RGB")


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_non_jpeg_tiff_falls_back_to_region_with_same_pixels(slides_dir, backend):
    with open_slide(slides_dir / DEFLATE_TIFF, backend=backend, mpp=0.5) as slide:
        reader = TileReader(slide, level=0, read_px=64, tile_px=64)
        assert reader.method == "region"
        assert "not JPEG" in reader.method_reason
        coords = np.array([[x, y] for y in range(0, 250, 48) for x in range(-16, 300, 48)])
        for indices, tiles in reader.read(coords):
            for i, tile in zip(indices, tiles, strict=True):
                expected = slide.read_region(tuple(coords[i]), 0, (64, 64))
                np.testing.assert_array_equal(tile, expected)


def test_forcing_native_on_a_non_jpeg_level_is_an_error(slides_dir):
    with (
        open_slide(slides_dir / DEFLATE_TIFF, mpp=0.5) as slide,
        pytest.raises(ValueError, match="native read impossible"),
    ):
        TileReader(slide, level=0, read_px=64, tile_px=64, method="native")


def test_ndpi_is_not_decoded_directly(slides_dir):
    path = slides_dir / "hamamatsu_test3-DAPI-2-387.ndpi"
    with open_slide(path) as slide:
        reader = TileReader(slide, level=0, read_px=64, tile_px=64)
    assert reader.method == "region"
    assert "NDPI" in reader.method_reason


def test_unknown_method_is_rejected(cmu_svs):
    with open_slide(cmu_svs) as slide, pytest.raises(ValueError, match="method must be"):
        TileReader(slide, level=0, read_px=64, tile_px=64, method="fastest")
