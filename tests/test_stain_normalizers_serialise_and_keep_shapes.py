"""Fitted normalisers round-trip through JSON, keep dtype and shape, and batch like singles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slideflow_core.errors import RegistryError
from slideflow_core.slides import open_slide
from tiling.stain import StainNormalizer, create_normalizer, fit_to_slide, stain_normalizers
from tiling.tissue import detect_tissue

METHODS = stain_normalizers.names()


@pytest.fixture(scope="module")
def cmu(cmu_svs):
    with open_slide(cmu_svs) as slide:
        yield slide


@pytest.fixture(scope="module")
def tissue(cmu):
    return detect_tissue(cmu)


@pytest.fixture(scope="module")
def tiles(cmu):
    corners = [(700, 1500), (1000, 1800), (1200, 2400), (900, 2600), (1400, 1300)]
    return np.stack([cmu.read_region(corner, 0, (128, 128)) for corner in corners])


@pytest.fixture(scope="module")
def other_stain(tiles):
    """The same tiles with stronger, bluer haematoxylin, as another lab's would look."""
    density = -np.log((tiles.astype(float) + 1) / 256) * [1.3, 1.0, 0.85]
    return np.clip(np.rint(256 * np.exp(-density) - 1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", METHODS)
def test_parameters_round_trip_to_identical_transforms(tiles, other_stain, method):
    fitted = create_normalizer(method).fit(tiles)
    assert isinstance(fitted, StainNormalizer)
    params = json.loads(json.dumps(fitted.to_dict()))
    rebuilt = create_normalizer(method).from_dict(params)
    assert rebuilt.to_dict() == fitted.to_dict()
    np.testing.assert_array_equal(rebuilt.transform(other_stain), fitted.transform(other_stain))


@pytest.mark.parametrize("method", METHODS)
def test_batches_agree_with_single_tiles_and_keep_dtype(tiles, other_stain, method):
    normalizer = create_normalizer(method).fit(tiles)
    batch = normalizer.transform(other_stain)
    assert batch.dtype == np.uint8 and batch.shape == other_stain.shape
    for i, tile in enumerate(other_stain):
        single = normalizer.transform(tile)
        assert single.shape == tile.shape and single.dtype == np.uint8
        np.testing.assert_array_equal(single, batch[i])
    assert not np.shares_memory(batch, other_stain)


@pytest.mark.parametrize("method", METHODS)
def test_fit_to_slide_samples_tissue_tiles_reproducibly(cmu, tissue, method):
    first = fit_to_slide(create_normalizer(method), cmu, tissue, n_tiles=8, mpp=1.0)
    again = fit_to_slide(create_normalizer(method), cmu, tissue, n_tiles=8, mpp=1.0)
    assert first.to_dict() == again.to_dict()
    as_source = fit_to_slide(
        create_normalizer(method).fit(cmu.read_region((700, 1500), 0, (256, 256))),
        cmu,
        tissue,
        n_tiles=8,
        mpp=1.0,
        as_source=True,
    )
    assert as_source.to_dict()["source"] == first.to_dict()["reference"]


def test_unfitted_normalizer_says_so(tiles):
    with pytest.raises(RuntimeError, match="not fitted"):
        create_normalizer("macenko").transform(tiles)


def test_reference_without_tissue_is_refused():
    with pytest.raises(ValueError, match="too little stained tissue"):
        create_normalizer("reinhard").fit(np.full((64, 64, 3), 245, np.uint8))


def test_unknown_normalizer_lists_the_available_ones():
    with pytest.raises(RegistryError, match="reinhard, macenko"):
        create_normalizer("vahadane")


def test_parameters_of_another_method_are_refused(tiles):
    params = create_normalizer("reinhard").fit(tiles).to_dict()
    with pytest.raises(ValueError, match="'reinhard' normaliser, not 'macenko'"):
        create_normalizer("macenko").from_dict(params)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((2, 8, 8, 3), np.float32)])
def test_malformed_tiles_are_refused(tiles, bad):
    with pytest.raises(ValueError, match="uint8"):
        create_normalizer("reinhard").fit(tiles).transform(bad)
