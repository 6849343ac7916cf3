"""Exports of slide stores follow QuPath's GeoJSON rules and read back with our importer."""

from __future__ import annotations

import gzip
import json
import logging
import uuid

import geojson
import numpy as np
import pytest
import shapely
from overlay_stores import TISSUE, make_store
from shapely.geometry import shape

from slideflow_core.geojson import (
    ExportOptions,
    IdSource,
    annotation_features,
    export_store,
    export_stores,
    find_stores,
    origin_offset,
    read_geojson,
    tile_features,
)
from slideflow_core.store import StoreError

QUPATH_FILES = (
    "coscia-lmd_Single_cells.geojson",
    "coscia-lmd_CD163_CD31_CDH1_cellpose_detections.geojson",
    "opendvp_QuPath_Annotations_wo_calibs.geojson",
)


def _no_nan(token: str) -> None:
    raise AssertionError(f"bare {token} token in the JSON")


def load(path):
    """Parse strictly: a NaN/Infinity token fails the test."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.loads(handle.read(), parse_constant=_no_nan)


def assert_qupath_feature(feature):
    assert feature["type"] == "Feature"
    assert uuid.UUID(feature["id"]).version == 4
    assert set(feature) <= {"type", "id", "geometry", "nucleusGeometry", "properties"}
    props = feature["properties"]
    assert props["objectType"] in {"annotation", "tile", "detection", "cell"}
    if "classification" in props:
        klass = props["classification"]
        assert isinstance(klass["name"], str)
        assert len(klass["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in klass["color"])
    for value in props.get("measurements", {}).values():
        assert isinstance(value, (int, float)) and np.isfinite(value)
    for key in ("geometry", "nucleusGeometry"):
        if key not in feature:
            continue
        assert "crs" not in feature[key]
        geom = shape(feature[key])
        assert geom.is_valid, shapely.is_valid_reason(geom)
        coords = feature[key]["coordinates"]
        for rings in [coords] if feature[key]["type"] == "Polygon" else coords:
            assert all(ring[0] == ring[-1] for ring in rings), "ring not closed"
        for polygon in getattr(geom, "geoms", [geom]):
            assert shapely.is_ccw(polygon.exterior), "exterior must be counter-clockwise"
            assert not any(shapely.is_ccw(r) for r in polygon.interiors), "holes must be clockwise"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"), cells=60, bad_cells=True)


def test_every_feature_follows_the_rules_and_parses_with_geojson(store, tmp_path, caplog):
    out = tmp_path / "all.geojson"
    with caplog.at_level(logging.WARNING):
        summary = export_store(store, out, run="r1")
    assert summary.counts == {"tissue": 1, "tiles": 24, "cells": 59}
    assert (summary.fixed, summary.dropped) == (1, 1)
    assert "1 invalid polygons repaired, 1 dropped" in caplog.text
    data = load(out)
    assert data["type"] == "FeatureCollection" and "crs" not in data
    parsed = geojson.loads(out.read_text())
    assert parsed.is_valid, parsed.errors()
    ids = [f["id"] for f in data["features"]]
    assert len(set(ids)) == len(ids)
    for feature in data["features"]:
        assert_qupath_feature(feature)
    assert not (tmp_path / "all.geojson.partial").exists()


def test_tiles_are_squares_with_qc_and_run_scores_and_nan_omitted(store, tmp_path):
    out = tmp_path / "tiles.geojson"
    export_store(store, out, run="r1", what=("tiles",))
    tiles = load(out)["features"]
    assert len(tiles) == 24
    first = tiles[0]
    assert first["properties"]["objectType"] == "tile"
    assert first["geometry"]["coordinates"] == [[[0, 0], [256, 0], [256, 256], [0, 256], [0, 0]]]
    assert first["properties"]["measurements"] == {
        "tissue_fraction": 0,
        "blur": 50,
        "keep": 0,
        "attention": 0,
    }
    assert "blur" not in tiles[1]["properties"]["measurements"]  # NaN QC value omitted
    assert "attention" not in tiles[2]["properties"]["measurements"]  # tile not scored
    assert tiles[-1]["properties"]["measurements"]["attention"] == 1


def test_tissue_annotation_keeps_its_hole(store, tmp_path):
    out = tmp_path / "tissue.geojson"
    export_store(store, out, what=("tissue",))
    (feature,) = load(out)["features"]
    props = feature["properties"]
    assert props["objectType"] == "annotation" and props["isLocked"] is False
    assert props["classification"]["name"] == "Tissue"
    assert shape(feature["geometry"]).equals(TISSUE)


def test_cells_carry_nucleus_geometry_classes_and_colours(store, tmp_path):
    out = tmp_path / "cells.geojson"
    export_store(store, out, what=("cells",))
    features = load(out)["features"]
    cells = [f for f in features if f["properties"]["objectType"] == "cell"]
    detections = [f for f in features if f["properties"]["objectType"] == "detection"]
    assert cells and detections and len(cells) + len(detections) == 59
    assert all("nucleusGeometry" in f for f in cells)
    assert not any("nucleusGeometry" in f for f in detections)
    for cell in cells:
        assert shape(cell["geometry"]).contains(shape(cell["nucleusGeometry"]).centroid)
    colours = {
        f["properties"]["classification"]["name"]: tuple(f["properties"]["classification"]["color"])
        for f in features
        if "classification" in f["properties"]
    }
    assert colours["Tumor"] == (200, 0, 0)  # from the table's metadata
    assert set(colours) == {"Tumor", "Stroma"}
    assert all("area" in f["properties"]["measurements"] for f in features)


def test_round_trip_through_our_reader_keeps_geometry_and_classes(store, tmp_path):
    out = tmp_path / "all.geojson.gz"
    export_store(store, out, run="r1")
    written = load(out)["features"]
    read = read_geojson(out)
    assert len(read) == len(written)
    for raw, feature in zip(written, read, strict=True):
        assert feature.id == raw["id"]
        assert feature.object_type == raw["properties"]["objectType"]
        klass = raw["properties"].get("classification")
        assert feature.classification == (klass["name"] if klass else None)
        assert feature.geometry.equals(shape(raw["geometry"]))
        if "nucleusGeometry" in raw:
            assert feature.nucleus.equals(shape(raw["nucleusGeometry"]))


@pytest.mark.parametrize("name", QUPATH_FILES)
def test_property_structure_matches_real_qupath_exports(store, tmp_path, shared_data, name):
    ours = load_by_type(export_path(store, tmp_path))
    theirs = load_by_type(shared_data / "geojson" / name)
    for kind, features in theirs.items():
        if kind not in ours:
            continue
        their_keys = {k for f in features for k in f}
        our_keys = {k for f in ours[kind] for k in f}
        assert our_keys - {"nucleusGeometry"} == their_keys - {"nucleusGeometry"}
        their_props = {k for f in features for k in f["properties"]}
        our_props = {k for f in ours[kind] for k in f["properties"]}
        assert their_props - {"name"} <= our_props | {"isLocked"}, (kind, their_props, our_props)
        assert our_props - {"name", "measurements", "classification", "isLocked"} == {"objectType"}


def export_path(store, tmp_path):
    out = tmp_path / "ours.geojson"
    if not out.exists():
        export_store(store, out, run="r1")
    return out


def load_by_type(path):
    groups = {}
    for feature in load(path)["features"]:
        groups.setdefault(feature["properties"]["objectType"], []).append(feature)
    return groups


def test_bounds_offset_moves_coordinates_to_the_qupath_origin(tmp_path):
    store = make_store(tmp_path, bounds=[100, 200, 1400, 800], run=None)
    qupath, slide = tmp_path / "q.geojson", tmp_path / "s.geojson"
    export_store(store, qupath, what=("tiles", "tissue"))
    export_store(store, slide, what=("tiles", "tissue"), origin="slide")
    q_tiles = [f for f in load(qupath)["features"] if f["properties"]["objectType"] == "tile"]
    assert q_tiles[0]["geometry"]["coordinates"][0][0] == [-100, -200]
    s_first = next(f for f in load(slide)["features"] if f["properties"]["objectType"] == "tile")
    assert s_first["geometry"]["coordinates"][0][0] == [0, 0]
    offset = origin_offset([100, 200, 1400, 800], "qupath")
    back = [f for f in read_geojson(qupath, offset=offset) if f.object_type == "annotation"]
    assert back[0].geometry.equals(TISSUE)


def test_newline_delimited_gzip_output_is_one_feature_per_line(store, tmp_path):
    out = tmp_path / "tiles.ndjson.gz"
    export_store(store, out, run="r1", what=("tiles",))
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert len(lines) == 24
    assert all(json.loads(line)["type"] == "Feature" for line in lines)
    assert len(read_geojson(out)) == 24


def test_reexport_is_byte_identical(store, tmp_path):
    a, b = tmp_path / "a.geojson", tmp_path / "b.geojson"
    export_store(store, a, run="r1")
    export_store(store, b, run="r1")
    assert a.read_bytes() == b.read_bytes()


def test_probability_runs_classify_tiles_by_most_probable_class(tmp_path):
    store = make_store(tmp_path, score_kind="probability")
    out = tmp_path / "p.geojson"
    export_store(store, out, run="r1", what=("tiles",), tile_object_type="detection")
    tiles = load(out)["features"]
    assert {f["properties"]["objectType"] for f in tiles} == {"detection"}
    assert "classification" not in tiles[2]["properties"]  # unscored tile
    assert tiles[0]["properties"]["classification"]["name"] == "Tumor"
    assert tiles[-1]["properties"]["classification"]["name"] == "Stroma"
    assert set(tiles[0]["properties"]["measurements"]) >= {
        "probability: Tumor",
        "probability: Stroma",
    }


def test_keep_only_and_simplification(tmp_path):
    store = make_store(tmp_path, cells=20)
    out = tmp_path / "kept.geojson"
    assert export_store(store, out, what=("tiles",), keep_only=True).counts == {"tiles": 23}
    full, simple = tmp_path / "full.geojson", tmp_path / "simple.geojson"
    export_store(store, full, what=("cells",))
    export_store(store, simple, what=("cells",), simplify_px=2.0)
    assert simple.stat().st_size < full.stat().st_size
    for feature in load(simple)["features"]:
        assert_qupath_feature(feature)


def test_missing_layers_and_runs_are_clear_errors(tmp_path):
    store = make_store(tmp_path, run=None)
    with pytest.raises(StoreError, match="no cells"):
        export_store(store, tmp_path / "c.geojson", what=("cells",))
    with pytest.raises(StoreError, match="attention/nope"):
        export_store(store, tmp_path / "t.geojson", run="nope", what=("tiles",))
    assert not list(tmp_path.glob("*.geojson*"))
    with pytest.raises(ValueError, match="what must be"):
        ExportOptions(what=("pixels",))
    with pytest.raises(ValueError, match="origin"):
        ExportOptions(origin="top-left")


def test_builders_leave_the_callers_geometries_alone_and_round_corners():
    square = shapely.Polygon([(0.123, 0), (10, 0), (10, 10), (0.123, 10)])
    (text,) = annotation_features([square], ids=IdSource("t"), offset=(5, 5), precision=1)
    assert square.exterior.coords[0] == (0.123, 0.0)
    assert json.loads(text)["geometry"]["coordinates"][0][0] == [-4.9, -5.0]
    (tile,) = tile_features(np.array([[10, 20]]), 513.333333, ids=IdSource("t"))
    assert json.loads(tile)["geometry"]["coordinates"][0][:3] == [
        [10.0, 20.0],
        [523.33, 20.0],
        [523.33, 533.33],
    ]


def test_a_run_folder_exports_only_the_slides_the_run_scored(tmp_path):
    make_store(tmp_path, "S1", run="r1")
    make_store(tmp_path, "S2", run=None)  # in the project, not in the run
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "predictions.csv").write_text("slide_id,prob_1\nS1,0.9\n")
    summaries = export_stores(run_dir, tmp_path / "out", what=("tiles",))
    assert [s.slide_id for s in summaries] == ["S1"] and summaries[0].error is None
    (run_dir / "predictions.csv").unlink()  # a run folder without predictions: every store
    assert [p.stem for p in find_stores(run_dir)[0]] == ["S1", "S2"]
    assert find_stores(run_dir)[1] == "r1"
