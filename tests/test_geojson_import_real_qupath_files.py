"""QuPath GeoJSON exports import as shapely geometries with their classes."""

from __future__ import annotations

import gzip
import json

import pytest
from shapely.geometry import MultiPolygon, Point

from slideflow_core.geojson import GeoJSONError, read_geojson, read_roi

EXPECTED = {  # file -> (features, object types present)
    "coscia-lmd_Single_cells.geojson": (131, {"annotation", "cell"}),
    "coscia-lmd_CD163_CD31_CDH1_cellpose_detections.geojson": (221, {"annotation", "detection"}),
    "coscia-lmd_MultiPolygon.geojson": (154, {"annotation"}),
    "opendvp_QuPath_Annotations_wo_calibs.geojson": (51, {"annotation"}),
    "qupath-core_polygon_bare-geometry.geojson": (1, {None}),
}


@pytest.fixture(scope="module")
def geojson_dir(shared_data):
    return shared_data / "geojson"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_exports_import_with_object_types(geojson_dir, name):
    features = read_geojson(geojson_dir / name)
    count, types = EXPECTED[name]
    assert len(features) == count
    assert {f.object_type for f in features} == types
    assert all(f.geometry.is_valid for f in features)


def test_classifications_and_colours_are_kept(geojson_dir):
    features = read_geojson(geojson_dir / "coscia-lmd_Single_cells.geojson")
    first = features[0]
    assert (first.classification, first.color) == ("class_1", (3, 128, 17))
    assert first.id == "eed9a4f6-c4f0-4185-9ccd-fbe220449d00"
    cells = [f for f in features if f.object_type == "cell"]
    assert all(isinstance(v, (int, float)) for v in cells[0].properties["measurements"].values())


def test_points_and_multipolygons_are_geometries(geojson_dir):
    features = read_geojson(geojson_dir / "coscia-lmd_MultiPolygon.geojson")
    kinds = {f.geometry.geom_type for f in features}
    assert {"Polygon", "MultiPolygon", "Point"} <= kinds


def test_roi_is_the_union_of_polygon_annotations(geojson_dir):
    roi = read_roi(geojson_dir / "coscia-lmd_Single_cells.geojson", classes=["class_1"])
    assert isinstance(roi, MultiPolygon)
    assert roi.contains(Point(500, 200))
    bare = read_roi(geojson_dir / "qupath-core_polygon_bare-geometry.geojson")
    assert bare.area > 0


def test_gzipped_files_read_the_same(geojson_dir, tmp_path):
    source = geojson_dir / "opendvp_QuPath_Annotations_wo_calibs.geojson"
    packed = tmp_path / "a.geojson.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    assert len(read_geojson(packed)) == len(read_geojson(source))


def test_malformed_feature_names_its_index(tmp_path):
    bad = tmp_path / "bad.geojson"
    good = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    broken = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [good, broken]}))
    with pytest.raises(GeoJSONError, match="feature 1"):
        read_geojson(bad)


def test_self_intersecting_polygon_is_repaired_or_refused(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps(bowtie))
    assert read_geojson(path)[0].geometry.is_valid
    with pytest.raises(GeoJSONError, match="invalid geometry"):
        read_geojson(path, repair=False)


def test_not_json_and_no_polygons_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.geojson"
    junk.write_text("{not json")
    with pytest.raises(GeoJSONError, match="not valid JSON"):
        read_geojson(junk)
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(GeoJSONError, match="no polygon"):
        read_roi(points)
