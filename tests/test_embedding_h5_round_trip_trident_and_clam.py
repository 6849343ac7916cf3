"""Features leave as TRIDENT / CLAM files and come back as the same bag; pickles are refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from embedding_project import CONFIG, TinyEmbedder

from embedders import embed_slide, export_features, import_features
from embedders.h5 import FeatureFileError
from slideflow_core.features import read_features
from tiling import TilingConfig, export_h5, tile_slide


class Payload:
    """An arbitrary class: only a full unpickle could rebuild it."""


@pytest.fixture(scope="module")
def store(tmp_path_factory, cmu_svs):
    path = tmp_path_factory.mktemp("h5") / "cmu.zarr"
    tile_slide(cmu_svs, path, TilingConfig(**CONFIG), slide_id="cmu")
    embed_slide(path, TinyEmbedder(), dtype="float32")
    return path


def test_trident_layout_round_trips(store, tmp_path):
    (path,) = export_features(store, "tiny", tmp_path)
    patches = export_h5(store, tmp_path)  # TRIDENT's job layout: patches/ beside features_*/
    assert path == patches.parent.parent / "features_tiny" / "cmu.h5"
    with h5py.File(patches, "r") as handle:
        patch_coords, patch_attrs = handle["coords"][:], dict(handle["coords"].attrs)
    bag = read_features(store, "tiny")
    with h5py.File(path, "r") as handle:
        assert set(handle) == {"features", "coords"}
        assert handle["features"].shape == (len(bag), TinyEmbedder.dim)
        assert handle["features"].dtype == np.float32
        assert handle["coords"].dtype == np.int64
        attrs = handle["coords"].attrs
        # What TRIDENT's reader requires (and no CLAM patch_level to contradict it).
        for key in ("patch_size", "level0_magnification", "target_magnification"):
            assert key in attrs
        assert "patch_level" not in attrs
        # 257 level-0 px per 64-px tile on an AppMag-20 slide: the exact ratio, not 5.
        assert attrs["target_magnification"] == pytest.approx(20 * 64 / 257)
        assert attrs["patch_size_level0"] == 257
        assert dict(attrs) == pytest.approx(patch_attrs | {"savetodir": attrs["savetodir"]})
        assert handle["features"].attrs["name"] == "cmu"
        # The QC-kept tiles: the same rows as the coordinates file TRIDENT would patch.
        np.testing.assert_array_equal(handle["coords"][:], patch_coords)
    back = import_features(path)
    assert (back.slide_id, back.model_id) == ("cmu", "tiny")
    np.testing.assert_array_equal(back.features, bag.features)
    np.testing.assert_array_equal(back.coords, bag.coords)


def test_clam_layout_writes_h5_and_a_plain_tensor(store, tmp_path):
    h5_path, pt_path = export_features(store, "tiny", tmp_path, layout="clam")
    assert h5_path == tmp_path / "h5_files" / "cmu.h5"
    assert pt_path == tmp_path / "pt_files" / "cmu.pt"
    tensor = torch.load(pt_path, weights_only=True)
    bag = read_features(store, "tiny")
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_array_equal(tensor.numpy(), bag.features)
    from_pt = import_features(pt_path)  # coordinates from h5_files/ beside pt_files/
    np.testing.assert_array_equal(from_pt.features, bag.features)
    np.testing.assert_array_equal(from_pt.coords, bag.coords)


def test_bad_feature_files_are_refused_with_the_reason(store, tmp_path):
    patches = tmp_path / "patches.h5"
    with h5py.File(patches, "w") as handle:
        handle["coords"] = np.zeros((3, 2), np.int64)
    with pytest.raises(FeatureFileError, match="no 'features' dataset"):
        import_features(patches)
    pickled = tmp_path / "pt_files" / "evil.pt"
    pickled.parent.mkdir()
    torch.save({"features": Payload()}, pickled)  # loading it would run pickle code
    with pytest.raises(FeatureFileError, match="not a plain tensor file"):
        import_features(pickled)
    lonely = tmp_path / "elsewhere" / "pt_files" / "x.pt"
    lonely.parent.mkdir(parents=True)
    torch.save(torch.zeros(2, 3), lonely)
    with pytest.raises(FeatureFileError, match="coordinates were expected"):
        import_features(lonely)
