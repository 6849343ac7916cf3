"""Nucleus outlines exported from QuPath as GeoJSON, on their slide, become training tiles.

The synthetic slide's nuclei are known ellipses: written as QuPath detections, they
must come back as instance maps lying on the slide's dark nuclei, and train the learned
segmenter; cells use their ``nucleusGeometry``; classes become types.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cells_fixtures import sparse_slide
from shapely import affinity
from shapely.geometry import Point, mapping

from embedders.dense import AnnotationError, SegmenterTrainConfig, train_segmenter
from embedders.dense.deconvolution import stain_concentrations
from embedders.dense.geojson_data import geojson_tiles


@pytest.fixture(scope="module")
def slide_and_outlines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geojson")
    slide, truth = sparse_slide(folder, width_px=1024, height_px=1024)
    features = []
    for index, ((x, y), radius, ratio, angle) in enumerate(
        zip(
            truth.nuclei,
            truth.nuclei_radius_px,
            truth.nuclei_axis_ratio,
            truth.nuclei_angle_rad,
            strict=True,
        )
    ):
        major, minor = radius * np.sqrt(ratio), radius / np.sqrt(ratio)
        ellipse = affinity.rotate(
            affinity.scale(Point(x, y).buffer(1.0), major, minor), -angle, use_radians=True
        )
        kind = "cell" if index % 2 else "detection"
        properties = {
            "objectType": kind,
            "classification": {"name": ["Tumor", "Immune"][index % 2]},
        }
        feature = {
            "type": "Feature",
            "geometry": mapping(ellipse.buffer(radius)),
            "properties": properties,
        }
        if kind == "cell":
            feature["nucleusGeometry"] = mapping(ellipse)
        else:
            feature["geometry"] = mapping(ellipse)
        features.append(feature)
    outlines = folder / "nuclei.geojson"
    outlines.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return slide, outlines, truth


def test_outlines_become_instance_maps_on_the_dark_nuclei(slide_and_outlines):
    slide, outlines, truth = slide_and_outlines
    tiles = geojson_tiles(slide, outlines, mpp=0.25, tile_px=256)
    assert tiles and sum(t.n_nuclei for t in tiles) >= 0.9 * truth.n_nuclei
    for tile in tiles:
        h, _ = stain_concentrations(tile.image)
        assert h[tile.instances > 0].mean() > 2 * h[tile.instances == 0].mean()
        ids = np.unique(tile.instances)
        assert ids.tolist() == list(range(len(ids)))


def test_classes_become_types_and_the_tiles_train(slide_and_outlines, tmp_path):
    slide, outlines, _ = slide_and_outlines
    tiles = geojson_tiles(slide, outlines, mpp=0.5, tile_px=128, typed=True)
    assert tiles[0].classes == ("Immune", "Tumor") and tiles[0].types is not None
    config = SegmenterTrainConfig(
        steps=2, batch_size=2, crop_px=64, width=8, threads=1, progress=False, mpp=0.5
    )
    result = train_segmenter(tiles, out=tmp_path / "typed.safetensors", config=config)
    assert result.segmenter.classes == ("Immune", "Tumor")


def test_a_file_without_nuclei_is_one_clear_error(slide_and_outlines, tmp_path):
    slide, _, _ = slide_and_outlines
    regions = tmp_path / "regions.geojson"
    square = {"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]]}
    feature = {"type": "Feature", "geometry": square, "properties": {"objectType": "annotation"}}
    regions.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(AnnotationError, match="outlines no nucleus"):
        geojson_tiles(slide, regions)


def test_sfc_cells_train_takes_a_slide_and_its_geojson(slide_and_outlines, tmp_path):
    import os
    import subprocess
    import sys

    slide, outlines, _ = slide_and_outlines
    out = tmp_path / "w.safetensors"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable, "-m", "slideflow_core.cli", "cells", "train", str(slide),
            "--annotations", str(outlines), "--out", str(out), "--steps", "1",
            "--batch-size", "1", "--crop-px", "64", "--threads", "1", "--no-progress",
        ],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "w.card.json").read_text())
    assert card["data"]["annotations"] == str(outlines.resolve())
    assert card["data"]["train_tiles"][0]["id"].startswith("sparse-x")
