"""CLAM/TRIDENT .h5 coordinates: our export reads like theirs, and theirs imports."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from tiling import TilingConfig, export_h5, import_h5, open_store, read_h5_coords, tile_slide
from tiling.h5 import H5FormatError


@pytest.fixture(scope="module")
def store(cmu_svs, tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "cmu.zarr"
    config = TilingConfig(mpp=0.499, tile_px=128, shard_tiles=32, codec="zstd")  # lossless
    tile_slide(cmu_svs, path, config, slide_id="cmu")
    return path


def test_clam_export_writes_clam_attributes(store, tmp_path):
    out = export_h5(store, tmp_path, layout="clam", all_tiles=True)
    assert out == tmp_path / "patches" / "cmu.h5"
    with h5py.File(out) as handle:
        coords = handle["coords"]
        attrs = dict(coords.attrs)
        np.testing.assert_array_equal(coords[:], open_store(store).coords)
    assert attrs["patch_size"] == 128
    assert attrs["patch_level"] == 0
    assert list(attrs["downsample"]) == [1.0, 1.0]
    assert list(attrs["level_dim"]) == [2220, 2967]
    assert attrs["name"] == "cmu"


def test_trident_export_of_an_unresized_tiling_keeps_the_magnification(store, tmp_path):
    out = export_h5(store, tmp_path)
    assert out == tmp_path / "20x_128px_0px_overlap" / "patches" / "cmu_patches.h5"
    _, attrs = read_h5_coords(out)
    # AppMag 20, tiles read as stored: TRIDENT must not resample (20.04x would).
    assert attrs["level0_magnification"] == attrs["target_magnification"] == 20
    assert attrs["patch_size"] == attrs["patch_size_level0"] == 128


def test_export_holds_the_tiles_passing_qc(store, tmp_path):
    keep = open_store(store).qc()["keep"].to_numpy()
    coords, _ = read_h5_coords(export_h5(store, tmp_path))
    assert len(coords) == keep.sum() < len(keep)


def test_imported_trident_file_reads_the_same_tiles(store, cmu_svs, tmp_path):
    h5 = export_h5(store, tmp_path, all_tiles=True)
    imported = open_store(import_h5(h5, cmu_svs, tmp_path / "imported.zarr"))
    original = open_store(store)
    assert not imported.has_pixels
    np.testing.assert_array_equal(imported.coords, original.coords)
    np.testing.assert_array_equal(imported.read_tiles([0, 5]), original.read_tiles([0, 5]))


def test_clam_style_file_without_trident_attributes_imports(cmu_svs, tmp_path):
    path = tmp_path / "clam.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("coords", data=np.array([[0, 0], [256, 512]]))
        dataset.attrs["patch_size"] = 256
        dataset.attrs["patch_level"] = 0
    tiles = open_store(import_h5(path, cmu_svs, tmp_path / "clam.zarr"))
    assert len(tiles) == 2
    assert tiles.info["mpp_actual"] == pytest.approx(0.499)
    assert tiles.read_tiles([1]).shape == (1, 256, 256, 3)


def test_files_without_coords_are_clear_errors(tmp_path, cmu_svs):
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=np.zeros((3, 4)))
    with pytest.raises(H5FormatError, match="no 'coords' dataset"):
        import_h5(path, cmu_svs, tmp_path / "x.zarr")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(H5FormatError, match="not a readable HDF5"):
        read_h5_coords(junk)
