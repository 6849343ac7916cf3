"""Stored tiles are exactly what the slide gives at that position and resolution, when lossless."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from slideflow_core.slides import open_slide
from tiling import TilingConfig, open_cohort, open_store, tile_slide


@pytest.fixture(scope="module")
def native_store(cmu_svs, tmp_path_factory):
    store = tmp_path_factory.mktemp("stores") / "cmu.zarr"
    result = tile_slide(
        cmu_svs, store, TilingConfig(mpp=0.499, tile_px=128, shard_tiles=32, codec="zstd")
    )
    assert result.status == "done"
    return store


def test_stored_tiles_equal_direct_read_region_pixel_for_pixel(native_store, cmu_svs):
    tiles = open_store(native_store)
    assert tiles.has_pixels
    assert len(tiles) > 50
    assert tiles.info["resized"] is False
    stored = zarr.open_array(str(native_store / "tiles"), mode="r")
    with open_slide(cmu_svs) as slide:
        for i in np.linspace(0, len(tiles) - 1, 12).astype(int):
            x, y = (int(v) for v in tiles.coords[i])
            np.testing.assert_array_equal(stored[i], slide.read_region((x, y), 0, (128, 128)))


@pytest.mark.parametrize("codec", ["lz4", "none"])
def test_every_lossless_codec_stores_the_slides_pixels(codec, cmu_svs, tmp_path):
    # "none" (uncompressed) once stored zeros: it was taken for "no pixels stored".
    store = tmp_path / f"cmu-{codec}.zarr"
    config = TilingConfig(mpp=0.499, tile_px=128, shard_tiles=32, codec=codec)
    tile_slide(cmu_svs, store, config)
    tiles = open_store(store)
    assert tiles.info["codec"] == codec
    with open_slide(cmu_svs) as slide:
        for i in (0, len(tiles) // 2, len(tiles) - 1):
            x, y = (int(v) for v in tiles.coords[i])
            expected = slide.read_region((x, y), 0, (128, 128))
            np.testing.assert_array_equal(tiles.read_tiles([i])[0], expected)


def test_resized_tiles_equal_read_at(cmu_svs, tmp_path):
    store = tmp_path / "cmu-1um.zarr"
    tile_slide(cmu_svs, store, TilingConfig(mpp=1.0, tile_px=64, shard_tiles=16, codec="zstd"))
    tiles = open_store(store)
    assert tiles.info["resized"] is True
    assert tiles.info["mpp_actual"] == 1.0
    with open_slide(cmu_svs) as slide:
        for i in (0, len(tiles) // 2, len(tiles) - 1):
            x, y = (int(v) for v in tiles.coords[i])
            expected = slide.read_at((x, y), mpp=1.0, tile_px=64)
            np.testing.assert_array_equal(tiles.read_tiles([i])[0], expected)


def test_store_records_provenance(native_store, cmu_svs):
    tiles = open_store(native_store)
    slide = tiles.attrs["slide"]
    assert slide["size_bytes"] == cmu_svs.stat().st_size
    assert len(slide["header_sha256"]) == 64
    info = tiles.info
    assert info["mpp_requested"] == 0.499
    assert info["mpp_actual"] == pytest.approx(0.499)
    assert info["level"] == 0
    assert info["config"]["tile_px"] == 128
    assert info["coordinate_space"] == "level0_px"
    assert "zarr" in info["versions"]
    assert info["backend"]["backend"] == "openslide"
    assert info["codec"] == "zstd"
    assert tiles.attrs["tissue"]["detector"] == "clam"


def test_qc_columns_are_stored_for_every_tile(native_store):
    qc = open_store(native_store).qc()
    for column in ("tissue_fraction", "background_fraction", "blur", "pen_fraction", "keep"):
        assert column in qc
    assert not qc[["tissue_fraction", "blur"]].isna().any().any()
    assert 0 < qc["keep"].sum() <= len(qc)


def test_coordinates_only_store_reads_the_same_pixels_lazily(native_store, cmu_svs, tmp_path):
    lazy = tmp_path / "lazy.zarr"
    tile_slide(
        cmu_svs, lazy, TilingConfig(mpp=0.499, tile_px=128, shard_tiles=32, store_pixels=False)
    )
    stored, coords_only = open_store(native_store), open_store(lazy)
    assert not coords_only.has_pixels
    assert not (lazy / "tiles").exists()
    np.testing.assert_array_equal(stored.coords, coords_only.coords)
    picks = [0, 7, len(stored) - 1]
    np.testing.assert_array_equal(stored.read_tiles(picks), coords_only.read_tiles(picks))
    np.testing.assert_array_equal(stored.dask()[:40].compute(), coords_only.dask()[:40].compute())


def test_dask_view_of_a_cohort_concatenates_stores(native_store, tmp_path):
    view = open_cohort([native_store, native_store])
    n = len(open_store(native_store))
    assert view.tiles.shape == (2 * n, 128, 128, 3)
    assert list(view.table.columns[:4]) == ["slide_id", "tile", "x", "y"]
    np.testing.assert_array_equal(view.tiles[n + 3].compute(), view.tiles[3].compute())
    kept = open_cohort([native_store], keep_only=True)
    assert len(kept.table) == kept.tiles.shape[0] == int(view.table["keep"].sum() / 2)
