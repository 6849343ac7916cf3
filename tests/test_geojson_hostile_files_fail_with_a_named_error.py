"""Hostile GeoJSON (deep nesting, NaN/Inf, huge numbers, wrong types, cut files) gives GeoJSONError.

Every failure names the file and, where it is about one feature, that
feature's index and id; no RecursionError, GEOSException or ValueError
escapes. The streaming reader reads real QuPath exports exactly like a plain
``json.load``, whatever its buffer size.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from slideflow_core.geojson import (
    GeoJSONError,
    parse,
    polygons_of,
    read_geojson,
    read_labels,
    read_roi,
)
from slideflow_core.geojson.read import iter_geojson

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
READERS = [read_geojson, read_roi, read_labels]


def feature(coordinates, kind="Polygon"):
    geometry = {"type": kind, "coordinates": coordinates}
    return {"type": "Feature", "geometry": geometry, "properties": {"objectType": "annotation"}}


def collection(*features) -> str:
    """A FeatureCollection whose feature 0 is a good square, then ``features`` (JSON text)."""
    return json.dumps({"type": "FeatureCollection", "features": [feature([SQUARE]), *features]})


def with_bad_ring(text: str) -> str:
    """A collection whose feature 1 is a square with its second vertex's x replaced by ``text``."""
    ring = json.dumps([[0, 0], ["X", 0], [10, 10], [0, 10], [0, 0]]).replace('"X"', text)
    good = json.dumps(feature([SQUARE]))
    bad = json.dumps({**feature(None), "id": "obj-7"}).replace("null", f"[{ring}]")
    return '{"type": "FeatureCollection", "features": [' + good + ", " + bad + "]}"


def huge_integer(digits: int) -> str:
    return "9" * digits


HOSTILE = {
    # nesting
    "nested_100k_deep": (
        collection()[:-2]
        + ', {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": '
        + "[" * 100_000
        + "]" * 100_000
        + '}, "properties": {}}]}',
        "feature 1 is nested too deeply",
    ),
    "nested_60_deep": (
        collection(feature(json.loads("[" * 60 + "1, 2" + "]" * 60))),
        "feature 1: Polygon coordinates must be",
    ),
    "multipolygon_depth_under_polygon": (
        collection(feature([[SQUARE]])),
        "feature 1: Polygon coordinates must be",
    ),
    "point_depth_under_multipolygon": (
        collection(feature([1, 2], kind="MultiPolygon")),
        "feature 1: MultiPolygon coordinates must be",
    ),
    # numbers
    "nan": (with_bad_ring("NaN"), "not finite"),
    "infinity": (with_bad_ring("Infinity"), "not finite"),
    "minus_infinity": (with_bad_ring("-Infinity"), "not finite"),
    "1e400": (with_bad_ring("1e400"), "not finite"),
    "integer_of_5000_digits": (with_bad_ring(huge_integer(5000)), "number too long"),
    "integer_of_400_digits": (with_bad_ring(huge_integer(400)), "huge integer"),
    "integer_of_20_digits": (with_bad_ring(huge_integer(20)), "huge integer"),
    "beyond_1e9_px": (with_bad_ring("2e9"), "beyond"),
    "integer_beyond_1e9_px": (with_bad_ring("5000000000"), "beyond"),
    # types
    "string_coordinate": (with_bad_ring('"5"'), "must be numbers"),
    "boolean_ring": (
        collection(feature([[[True, False], [True, True], [False, True], [True, False]]])),
        "must be numbers",
    ),
    "null_coordinate": (with_bad_ring("null"), "huge integer or a null"),
    "object_coordinate": (with_bad_ring("{}"), "must be"),
    "ragged_position": (collection(feature([[[0, 0], [1], [1, 1], [0, 0]]])), "[x, y]"),
    "coordinates_a_string": (collection(feature("abc")), "must be an array"),
    "coordinates_an_object": (collection(feature({})), "must be an array"),
    "geometry_type_a_number": (
        collection({"type": "Feature", "geometry": {"type": 5}, "properties": {}}),
        "unknown geometry type",
    ),
    "two_point_ring": (collection(feature([[[0, 0], [1, 1]]])), "malformed Polygon"),
    "one_point_line": (collection(feature([[0, 0]], kind="LineString")), "malformed LineString"),
    "collection_of_collections": (
        collection(
            {
                "type": "Feature",
                "properties": {},
                "geometry": json.loads(
                    '{"type": "GeometryCollection", "geometries": [' * 6 + "]}" * 6
                ),
            }
        ),
        "GeometryCollection",
    ),
    # files
    "empty": ("", "the file is empty"),
    "blank": (" \n\t\n", "the file is empty"),
    "truncated_inside_a_feature": (collection(feature([SQUARE]))[:-40], "is it truncated?"),
    "truncated_after_a_comma": (collection()[:-2] + ",", "is it truncated?"),
    "truncated_before_the_end": (collection()[:-2], "is it truncated?"),
    "a_number": ("42", "expected a GeoJSON object or array"),
    "data_after_the_collection": (collection() + "]", "unexpected data after"),
    "features_not_an_array": ('{"type": "FeatureCollection", "features": 3}', "'features'"),
    "features_in_a_feature": ('{"type": "Feature", "features": []}', "only a FeatureCollection"),
    "unknown_type": ('{"type": "Topology"}', "unknown GeoJSON type"),
    "binary": ("\x00\x01\x02", "expected a GeoJSON object"),
}


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_file_gives_a_geojson_error_naming_the_file(tmp_path, name, reader):
    text, expected = HOSTILE[name]
    path = tmp_path / f"{name}.geojson"
    path.write_text(text)
    with pytest.raises(GeoJSONError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "\n" not in info.value.message


def test_a_failing_feature_is_named_by_index_and_id(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(with_bad_ring("NaN"))
    with pytest.raises(GeoJSONError, match=r"feature 1: .* \[feature id 'obj-7'\]"):
        read_roi(path)


def test_a_truncated_gzip_file_is_a_geojson_error(tmp_path):
    path = tmp_path / "a.geojson.gz"
    path.write_bytes(gzip.compress(collection(feature([SQUARE])).encode())[:-12])
    with pytest.raises(GeoJSONError, match=str(path)):
        read_geojson(path)
    path.write_bytes(b"\x1f\x8b not gzip at all")
    with pytest.raises(GeoJSONError, match=str(path)):
        read_geojson(path)


def test_a_missing_file_is_a_geojson_error(tmp_path):
    with pytest.raises(GeoJSONError, match="not found"):
        read_roi(tmp_path / "nope.geojson")


@pytest.mark.parametrize("limit", [3, 4])
def test_the_coordinate_limits_name_the_feature_that_crosses_them(tmp_path, monkeypatch, limit):
    path = tmp_path / "a.geojson"
    path.write_text(collection(*[feature([SQUARE])] * 5))  # 6 features of 5 positions
    monkeypatch.setattr(parse, "MAX_COORDINATES_PER_FEATURE", limit)
    with pytest.raises(GeoJSONError, match=f"feature 0: more than {limit} coordinates in one"):
        read_geojson(path)
    monkeypatch.setattr(parse, "MAX_COORDINATES_PER_FEATURE", 5)
    monkeypatch.setattr(parse, "MAX_COORDINATES_PER_FILE", 5 * limit)
    with pytest.raises(GeoJSONError, match=f"feature {limit}: the file holds more than"):
        read_geojson(path)


def test_a_feature_longer_than_the_text_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "a.geojson"
    long_ring = [[i, 0] for i in range(200)] + [[0, 5], [0, 0]]
    path.write_text(collection(feature([long_ring])))
    monkeypatch.setattr(parse, "MAX_FEATURE_CHARS", 1000)
    monkeypatch.setattr(parse, "_CHUNK_CHARS", 64)
    with pytest.raises(GeoJSONError, match=r"feature 1 .* is longer than 1,000 characters"):
        read_geojson(path)
    path.write_text(collection(feature([[*long_ring[:40], [0, 0]]])))  # under the limit
    assert len(read_geojson(path)) == 2


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.geometry.equals_exact(y.geometry, 0) and x.properties == y.properties
        assert (x.id, x.object_type, x.classification, x.color) == (
            y.id,
            y.object_type,
            y.classification,
            y.color,
        )


def _plain(path: Path) -> list[dict]:
    """What ``json.load`` makes of the file's features (the reference for the streaming reader)."""
    data = json.loads(path.read_text())
    return data["features"] if data.get("type") == "FeatureCollection" else [data]


@pytest.fixture
def geojson_dir(shared_data):
    return shared_data / "geojson"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_real_qupath_exports_read_the_same_with_any_buffer_size(geojson_dir, monkeypatch, chunk):
    files = sorted(geojson_dir.glob("*.geojson"))
    expected = {path.name: read_geojson(path) for path in files}
    monkeypatch.setattr(parse, "_CHUNK_CHARS", chunk)
    for path in files:
        got = read_geojson(path)
        _same(got, expected[path.name])
        raw = _plain(path)
        assert len(got) == len(raw)
        for feature_read, feature_raw in zip(got, raw, strict=True):
            geometry = feature_raw.get("geometry", feature_raw)
            assert feature_read.geometry.equals(shapely.make_valid(shape(geometry)))


@pytest.mark.parametrize("chunk", [3, 4096])
def test_every_container_form_streams_alike(tmp_path, geojson_dir, monkeypatch, chunk):
    source = geojson_dir / "coscia-lmd_Single_cells.geojson"
    features = json.loads(source.read_text())["features"]
    expected = read_geojson(source)
    forms = {
        "array.geojson": json.dumps(features, indent=1),
        "lines.ndjson": "\n".join(json.dumps(f) for f in features) + "\n",
        "seq.geojsons": "".join("\x1e" + json.dumps(f) + "\n" for f in features),
        "features_last.geojson": json.dumps({"features": features, "type": "FeatureCollection"}),
        "bom.geojson": "\ufeff" + source.read_text(),
    }
    monkeypatch.setattr(parse, "_CHUNK_CHARS", chunk)
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        _same(read_geojson(tmp_path / name), expected)
    packed = tmp_path / "a.geojson.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    _same(read_geojson(packed), expected)
    single = tmp_path / "single.geojson"
    single.write_text(json.dumps(features[0]))
    _same(read_geojson(single), expected[:1])


def test_numbers_split_across_buffers_are_read_whole(tmp_path, monkeypatch):
    path = tmp_path / "a.ndjson"
    ring = [[123456.789, 0], [123456.789, 98765.4321], [0, 98765.4321], [0, 0], [123456.789, 0]]
    path.write_text(
        json.dumps(feature([ring]))
        + "\n"
        + json.dumps(
            {
                "type": "Feature",
                "properties": {"n": 123456789},
                "geometry": {"type": "Point", "coordinates": [1, 2]},
            }
        )
    )
    for chunk in range(1, 40):
        monkeypatch.setattr(parse, "_CHUNK_CHARS", chunk)
        polygon, point = read_geojson(path)
        assert polygon.geometry.bounds == (0, 0, 123456.789, 98765.4321)
        assert point.properties == {"n": 123456789}


def test_features_stream_one_at_a_time(tmp_path):
    path = tmp_path / "a.geojson"
    path.write_text(collection(feature([SQUARE])) + " trailing junk")
    features = iter_geojson(path)
    assert next(features).geometry.area == 100  # read before the junk is reached
    assert next(features).geometry.area == 100
    with pytest.raises(GeoJSONError, match="unexpected data after"):
        next(features)


def test_the_union_of_many_polygons_equals_shapely_union_all(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 2000, (600, 2))
    radii = rng.uniform(5, 60, 600)
    polygons = [
        shapely.Point(c).buffer(r, quad_segs=3) for c, r in zip(centres, radii, strict=True)
    ]
    polygons.append(
        shapely.box(5000, 5000, 5100, 5100).difference(shapely.box(5040, 5040, 5060, 5060))
    )
    polygons.append(shapely.box(5040, 5040, 5060, 5060))  # fills the hole exactly: merged
    polygons.append(shapely.box(5100, 5000, 5200, 5100))  # shares an edge: merged
    polygons.append(shapely.box(5200, 5100, 5300, 5200))  # touches a corner: kept apart
    features = [
        {"type": "Feature", "geometry": shapely.geometry.mapping(p), "properties": {}}
        for p in polygons
    ]
    path = tmp_path / "many.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    roi = read_roi(path)
    expected = shapely.union_all(polygons)
    # The same parts and vertices; intersection points may differ in the last bits.
    assert roi.is_valid and len(roi.geoms) == len(expected.geoms)
    assert shapely.equals_exact(shapely.normalize(roi), shapely.normalize(expected), 1e-6)
    assert shapely.equals_exact(
        shapely.normalize(polygons_of(read_geojson(path))), shapely.normalize(expected), 1e-6
    )
    assert math.isclose(roi.area, expected.area)
