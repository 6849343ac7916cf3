"""QuPath annotations import as class-labelled regions; bad input names the feature."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import MultiPolygon, Point

from slideflow_core.geojson import GeoJSONError, read_geojson, read_labels, read_roi

SQUARE_WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [
        [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]],
        [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]],
    ],
}
TWO_SQUARES = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[200, 0], [220, 0], [220, 20], [200, 20], [200, 0]]],
        [[[300, 0], [320, 0], [320, 20], [300, 20], [300, 0]]],
    ],
}


def feature(geometry, name=None, color=None, object_type="annotation"):
    props = {"objectType": object_type}
    if name is not None:
        props["classification"] = {"name": name, "color": color or [255, 0, 0]}
    return {"type": "Feature", "id": "x", "geometry": geometry, "properties": props}


def write(tmp_path, features, name="a.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_labels_group_polygons_multipolygons_and_holes_by_class(tmp_path):
    point = {"type": "Point", "coordinates": [5, 5]}
    path = write(
        tmp_path,
        [
            feature(SQUARE_WITH_HOLE, "Tumor"),
            feature(TWO_SQUARES, "Stroma", [0, 255, 0]),
            feature(point, "Tumor"),
            feature(SQUARE_WITH_HOLE, "Tumor", object_type="detection"),
            feature(
                {
                    "type": "Polygon",
                    "coordinates": [[[500, 500], [510, 500], [510, 510], [500, 500]]],
                }
            ),
        ],
    )
    labels = read_labels(path)
    assert set(labels) == {"Tumor", "Stroma", None}
    assert isinstance(labels["Tumor"], MultiPolygon)
    assert labels["Tumor"].area == 100 * 100 - 20 * 20
    assert not labels["Tumor"].contains(Point(50, 50))  # the hole is kept
    assert len(labels["Stroma"].geoms) == 2
    features = read_geojson(path)
    assert features[1].color == (0, 255, 0)
    assert features[0].geometry.interiors


def test_offset_moves_qupath_coordinates_into_the_slide_frame(tmp_path):
    path = write(tmp_path, [feature(SQUARE_WITH_HOLE, "Tumor")])
    roi = read_roi(path, offset=(1000, 2000))
    assert roi.bounds == (1000, 2000, 1100, 2100)


def test_newline_delimited_files_read_like_collections(tmp_path):
    path = tmp_path / "a.ndjson"
    lines = [json.dumps(feature(SQUARE_WITH_HOLE, "Tumor")), json.dumps(feature(TWO_SQUARES))]
    path.write_text("\n".join(lines) + "\n")
    assert [f.classification for f in read_geojson(path)] == ["Tumor", None]
    path.write_text(lines[0] + "\n{broken\n")
    with pytest.raises(GeoJSONError, match="line 2"):
        read_geojson(path)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "Feature", "properties": {}}, "feature 1: geometry is missing"),
        (feature(SQUARE_WITH_HOLE, "Tumor", color=[300, 0, 0]), "feature 1: classification color"),
        (
            {**feature(SQUARE_WITH_HOLE), "properties": {"classification": 7}},
            "feature 1: 'classification' must be an object",
        ),
        (
            {**feature(SQUARE_WITH_HOLE), "nucleusGeometry": {"type": "Polygon"}},
            "feature 1 nucleus",
        ),
        ({"type": "Polygon"}, "feature 1 is not a GeoJSON Feature"),
    ],
)
def test_invalid_features_are_errors_naming_their_index(tmp_path, bad, message):
    path = write(tmp_path, [feature(SQUARE_WITH_HOLE, "Tumor"), bad])
    with pytest.raises(GeoJSONError, match=message):
        read_geojson(path)


def test_a_file_without_polygons_is_no_label_source(tmp_path):
    path = write(tmp_path, [feature({"type": "Point", "coordinates": [1, 2]}, "Tumor")])
    with pytest.raises(GeoJSONError, match="no polygon annotation"):
        read_labels(path)
