"""Read QuPath-style GeoJSON: annotations, detections and cells as shapely geometries.

Accepts a ``FeatureCollection``, a list of ``Feature`` objects, a single
``Feature``, a bare geometry (QuPath writes all four) or newline-delimited
features, plain or gzipped. Coordinates are level-0 pixels with y pointing
down, as QuPath writes them; pass ``offset`` to move them into another frame
(see :func:`slideflow_core.geojson.objects.origin_offset` for slides with
OpenSlide bounds, whose QuPath coordinates start at the bounds origin).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from slideflow_core.errors import SlideflowError

log = logging.getLogger(__name__)

_GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}


class GeoJSONError(SlideflowError):
    """A GeoJSON file is malformed; the message names the file and feature index."""


@dataclass(frozen=True)
class GeoFeature:
    """One feature read from GeoJSON.

    Attributes
    ----------
    geometry
        Shapely geometry in level-0 pixel coordinates (repaired if it was invalid).
    object_type
        QuPath ``properties.objectType`` (``annotation``, ``detection``, ``cell``,
        ``tile``), ``None`` for a bare geometry.
    classification
        Class name, or ``None`` when unclassified.
    color
        Class colour ``(r, g, b)`` when given.
    properties
        The feature's full ``properties`` mapping.
    id
        The feature id, when present.
    nucleus
        The ``nucleusGeometry`` of a cell, when present.
    """

    geometry: BaseGeometry
    object_type: str | None = None
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    nucleus: BaseGeometry | None = None

    @property
    def measurements(self) -> dict[str, float]:
        """The flat ``properties.measurements`` map (empty when absent)."""
        values = self.properties.get("measurements") or {}
        return dict(values) if isinstance(values, dict) else {}


def _load(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise GeoJSONError(f"GeoJSON file not found: {path}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise GeoJSONError(
            f"{path}: not valid JSON ({exc})", hint="export it again from QuPath"
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise GeoJSONError(
                f"{path}: not valid JSON ({exc})", hint="export it again from QuPath"
            ) from exc
    return _load_lines(text, path)


def _load_lines(text: str, path: Path) -> list[Any]:
    """Newline-delimited features (one JSON object per line, RFC 8142 separators allowed)."""
    features = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip().lstrip("\x1e")
        if not line:
            continue
        try:
            features.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise GeoJSONError(
                f"{path}: line {number} is not valid JSON ({exc})",
                hint="newline-delimited GeoJSON holds one complete feature per line",
            ) from exc
    return features


def _raw_features(data: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise GeoJSONError(f"{path}: expected a GeoJSON object or array, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise GeoJSONError(f"{path}: FeatureCollection without a 'features' array")
        return features
    if kind == "Feature":
        return [data]
    if kind in _GEOMETRY_TYPES:
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise GeoJSONError(f"{path}: unknown GeoJSON type {kind!r}")


def _geometry(
    raw: Any, where: str, *, repair: bool, offset: tuple[float, float]
) -> tuple[BaseGeometry, bool]:
    """The geometry and whether it had to be repaired."""
    if not isinstance(raw, dict):
        raise GeoJSONError(f"{where}: geometry is missing or not an object")
    try:
        geometry = shape(raw)
    except Exception as exc:  # shapely raises several types for malformed geometry
        raise GeoJSONError(f"{where}: malformed geometry ({exc})") from exc
    if offset != (0.0, 0.0):
        geometry = shapely.transform(geometry, lambda xy: xy + offset)
    if not geometry.is_valid:
        if not repair:
            raise GeoJSONError(f"{where}: invalid geometry ({shapely.is_valid_reason(geometry)})")
        return shapely.make_valid(geometry), True
    return geometry, False


def _classification(properties: dict[str, Any], where: str) -> tuple[str | None, Any]:
    value = properties.get("classification") or {}
    if isinstance(value, str):  # some tools write the bare name
        return value, None
    if not isinstance(value, dict):
        raise GeoJSONError(f"{where}: 'classification' must be an object with a 'name'")
    name, color = value.get("name"), value.get("color")
    if name is not None and not isinstance(name, str):
        raise GeoJSONError(f"{where}: classification name must be a string, got {name!r}")
    if color is None:
        return name, None
    ok = (
        isinstance(color, list)
        and len(color) >= 3
        and all(isinstance(c, (int, float)) and 0 <= c <= 255 for c in color[:3])
    )
    if not ok:
        raise GeoJSONError(
            f"{where}: classification color must be [r, g, b] with values 0-255, got {color!r}"
        )
    return name, tuple(int(c) for c in color[:3])


def _parse_feature(
    raw: Any, index: int, path: Path, *, repair: bool, offset: tuple[float, float]
) -> tuple[GeoFeature, bool]:
    """The feature and whether its geometry had to be repaired."""
    where = f"{path}: feature {index}"
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise GeoJSONError(f"{where} is not a GeoJSON Feature")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise GeoJSONError(f"{where}: 'properties' must be an object")
    geometry, repaired = _geometry(raw.get("geometry"), where, repair=repair, offset=offset)
    nucleus = None
    if raw.get("nucleusGeometry") is not None:
        nucleus, fixed = _geometry(
            raw["nucleusGeometry"], f"{where} nucleusGeometry", repair=repair, offset=offset
        )
        repaired = repaired or fixed
    name, color = _classification(properties, where)
    feature = GeoFeature(
        geometry=geometry,
        object_type=properties.get("objectType"),
        classification=name,
        color=color,
        properties=properties,
        id=raw.get("id") if isinstance(raw.get("id"), str) else None,
        nucleus=nucleus,
    )
    return feature, repaired


def read_geojson(
    path: str | os.PathLike[str],
    *,
    repair: bool = True,
    offset: tuple[float, float] = (0.0, 0.0),
) -> list[GeoFeature]:
    """Read every feature of a GeoJSON file (``.geojson``, ``.geojson.gz`` or newline-delimited).

    Parameters
    ----------
    path
        File to read.
    repair
        Repair topologically invalid geometries (self-intersections, as QuPath
        sometimes writes) with :func:`shapely.make_valid` and log how many; when
        False they are an error.
    offset
        ``(dx, dy)`` added to every coordinate, e.g. the OpenSlide bounds origin
        to bring a QuPath export of a cropped slide back to the slide's frame.

    Raises
    ------
    GeoJSONError
        For unreadable JSON or malformed features, naming the feature index.
    """
    path = Path(path)
    shift = (float(offset[0]), float(offset[1]))
    raws = _raw_features(_load(path), path)
    parsed = [
        _parse_feature(raw, i, path, repair=repair, offset=shift) for i, raw in enumerate(raws)
    ]
    repaired = sum(fixed for _, fixed in parsed)
    if repaired:
        log.info("%s: repaired %d invalid geometries", path, repaired)
    return [feature for feature, _ in parsed]


def polygons_of(features: Iterable[GeoFeature]) -> MultiPolygon:
    """Union of the polygonal parts of ``features`` as one valid MultiPolygon."""
    parts: list[Polygon] = []
    for feature in features:
        for geom in getattr(feature.geometry, "geoms", [feature.geometry]):
            if isinstance(geom, Polygon) and not geom.is_empty:
                parts.append(geom)
            elif isinstance(geom, MultiPolygon):
                parts.extend(geom.geoms)
    merged = shapely.union_all(parts) if parts else MultiPolygon()
    if isinstance(merged, Polygon):
        return MultiPolygon([merged])
    if isinstance(merged, MultiPolygon):
        return merged
    return MultiPolygon([g for g in getattr(merged, "geoms", []) if isinstance(g, Polygon)])


def _select(
    features: Iterable[GeoFeature],
    classes: Iterable[str] | None,
    object_types: Iterable[str] | None,
) -> list[GeoFeature]:
    wanted_classes = set(classes) if classes is not None else None
    wanted_types = set(object_types) if object_types is not None else None
    return [
        f
        for f in features
        if (wanted_types is None or f.object_type is None or f.object_type in wanted_types)
        and (wanted_classes is None or f.classification in wanted_classes)
    ]


def read_roi(
    path: str | os.PathLike[str],
    *,
    classes: Iterable[str] | None = None,
    object_types: Iterable[str] | None = ("annotation",),
    offset: tuple[float, float] = (0.0, 0.0),
) -> MultiPolygon:
    """Polygonal regions of interest from a QuPath GeoJSON export.

    Parameters
    ----------
    path
        GeoJSON file.
    classes
        Keep only features with one of these classification names (all if None).
    object_types
        Keep only these ``objectType`` values (bare geometries are always kept);
        ``None`` keeps every type.
    offset
        ``(dx, dy)`` added to every coordinate (see :func:`read_geojson`).

    Raises
    ------
    GeoJSONError
        If the file holds no polygon after filtering.
    """
    roi = polygons_of(_select(read_geojson(path, offset=offset), classes, object_types))
    if roi.is_empty:
        raise GeoJSONError(
            f"{path}: no polygon to use as a region of interest",
            hint="draw/export polygon annotations in QuPath, or check the classes filter",
        )
    return roi


def read_labels(
    path: str | os.PathLike[str],
    *,
    object_types: Iterable[str] | None = ("annotation",),
    offset: tuple[float, float] = (0.0, 0.0),
) -> dict[str | None, MultiPolygon]:
    """Polygonal annotations grouped by class, for labelling tiles or cells by region.

    Each class maps to the union of its polygons (holes kept); unclassified
    polygons are under ``None``. Point and line annotations are ignored.

    Raises
    ------
    GeoJSONError
        If the file is malformed (naming the feature) or holds no polygon.
    """
    by_class: dict[str | None, list[GeoFeature]] = {}
    for feature in _select(read_geojson(path, offset=offset), None, object_types):
        by_class.setdefault(feature.classification, []).append(feature)
    labels = {name: polygons_of(group) for name, group in by_class.items()}
    labels = {name: region for name, region in labels.items() if not region.is_empty}
    if not labels:
        raise GeoJSONError(
            f"{path}: no polygon annotation to use as labels",
            hint="draw polygon annotations with classes in QuPath and export them as GeoJSON",
        )
    return labels
