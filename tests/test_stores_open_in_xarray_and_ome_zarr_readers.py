"""Every kind of store we write opens with xarray's own Zarr reader, from consolidated metadata.

A project is tiled, embedded, scored and segmented with the real stages; the store is then
read as another tool would: ``xarray.open_datatree(store, engine="zarr")`` and
``zarr.open_consolidated``, with warnings as errors (zarr warns about any non-Zarr file a
listing meets; xarray warns when it must fall back from consolidated metadata).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from embedding_project import TinyEmbedder
from ome_zarr_models.v05.image import Image

from embedders import embed_slide
from embedders.dense import segment_cohort
from slideflow_core.features import read_features, write_attention
from tiling import TilingConfig, export_h5, import_h5, tile_cohort


@pytest.fixture(scope="module")
def project(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("xarray")
    manifest = root / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    project = root / "project"
    config = TilingConfig(mpp=1.0, tile_px=128)
    assert tile_cohort(manifest, project, config, executor="local", progress=False).ok
    store = project / "stores" / "cmu.zarr"
    embed_slide(store, TinyEmbedder(), dtype="float32")
    scores = np.linspace(0, 1, len(read_features(store, "tiny")), dtype=np.float32)
    write_attention(store, "r1", scores, model_id="tiny", info={"head": "abmil"})
    assert segment_cohort(project, "classical", executor="local", progress=False).ok
    return project


def _strict_open(store) -> xr.DataTree:
    with warnings.catch_warnings():
        warnings.simplefilter("error", zarr.errors.ZarrUserWarning)
        warnings.simplefilter("error", RuntimeWarning)  # xarray's "no consolidated metadata"
        return xr.open_datatree(store, engine="zarr", consolidated=True)


def test_a_store_with_every_part_opens_as_a_datatree(project):
    store = project / "stores" / "cmu.zarr"
    tree = _strict_open(store)
    groups = set(tree.groups)
    assert {"/", "/qc", "/features/tiny", "/attention/r1", "/cells/classical"} <= groups
    assert tree["tiles"].dims == ("tile", "tile_y", "tile_x", "rgb")
    assert tree["features/tiny/features"].dims == ("embedded_tile", "feature")
    assert tree["attention/r1/scores"].dims == ("scored_tile",)
    tiles = tree["tiles"].attrs
    assert tiles["coordinate_space"] == "level0_px"
    assert (tiles["tile_px"], tiles["tile_mpp"], tiles["level0_mpp"]) == (128, 1.0, 0.499)
    assert tree["coords"].attrs["units"] == "level-0 pixel"
    assert tree["features/tiny/features"].attrs["tile_mpp"] == 1.0
    # The data reads back: xarray's coords are our coords.
    bag = read_features(store, "tiny")
    np.testing.assert_array_equal(tree["features/tiny/coords"].values, bag.coords)
    np.testing.assert_array_equal(tree["features/tiny/features"].values, bag.features)


def test_every_array_has_dimension_names_and_a_coordinate_space(project):
    root = zarr.open_consolidated(str(project / "stores" / "cmu.zarr"), mode="r")
    arrays = list(root.arrays()) + [
        (f"{path}/{name}", array) for path, group in root.groups() for name, array in _all(group)
    ]
    assert len(arrays) >= 14
    for name, array in arrays:
        assert array.metadata.dimension_names, name
        assert len(array.metadata.dimension_names) == array.ndim, name
        assert "coordinate_space" in array.attrs, name


def _all(group):
    for name, array in group.arrays():
        yield name, array
    for path, child in group.groups():
        for name, array in _all(child):
            yield f"{path}/{name}", array


def test_tissue_mask_has_ome_zarr_multiscales_at_its_physical_scale(project):
    root = zarr.open_consolidated(str(project / "stores" / "cmu.zarr"), mode="r")
    ome = root.attrs["ome"]
    [image] = ome["multiscales"]
    assert ome["version"] == "0.5"
    [dataset] = image["datasets"]
    mask = root[dataset["path"]]
    assert [a["name"] for a in image["axes"]] == list(mask.metadata.dimension_names)
    assert all(a["unit"] == "micrometer" for a in image["axes"])
    down_x, down_y = root.attrs["tissue"]["mask_downsample"]
    [scale] = dataset["coordinateTransformations"]
    assert scale["scale"] == pytest.approx([0.499 * down_y, 0.499 * down_x])
    # The mask covers the slide: its physical extent is the slide's.
    width_um = mask.shape[1] * scale["scale"][1]
    assert width_um == pytest.approx(2220 * 0.499, rel=0.01)


def test_the_ome_zarr_validator_reads_the_store_as_an_image(project):
    """ome-zarr-models (pydantic models of the OME-Zarr 0.5 spec) accepts the store's root."""
    image = Image.from_zarr(zarr.open_group(str(project / "stores" / "cmu.zarr"), mode="r"))
    [multiscale] = image.ome_attributes.multiscales
    assert [d.path for d in multiscale.datasets] == ["tissue_mask"]


def test_a_coordinates_only_store_opens_too(project, cmu_svs, tmp_path):
    h5 = export_h5(project / "stores" / "cmu.zarr", tmp_path / "job")
    store = import_h5(h5, cmu_svs, tmp_path / "imported.zarr")
    tree = _strict_open(store)
    assert "tiles" not in tree and tree["coords"].dims == ("tile", "xy")


def test_consolidation_keeps_verify_deep_clean(project):
    out = subprocess.run(
        [sys.executable, "-m", "slideflow_core.cli", "verify", str(project), "--deep"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
