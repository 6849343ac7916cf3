"""Read QuPath-style GeoJSON: annotations and detections as shapely geometries.

Accepts a ``FeatureCollection``, a list of ``Feature`` objects, a single
``Feature`` or a bare geometry (QuPath writes all four), plain or gzipped.
Coordinates are level-0 pixels with y pointing down, as QuPath writes them.
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
    """

    geometry: BaseGeometry
    object_type: str | None = None
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


def _load(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise GeoJSONError(f"GeoJSON file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise GeoJSONError(
            f"{path}: not valid JSON ({exc})", hint="export it again from QuPath"
        ) from exc


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


def _parse_feature(raw: Any, index: int, path: Path, *, repair: bool) -> GeoFeature:
    where = f"{path}: feature {index}"
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise GeoJSONError(f"{where} is not a GeoJSON Feature")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise GeoJSONError(f"{where}: 'properties' must be an object")
    try:
        geometry = shape(raw.get("geometry"))
    except Exception as exc:  # shapely raises several types for malformed geometry
        raise GeoJSONError(f"{where}: malformed geometry ({exc})") from exc
    if not geometry.is_valid:
        if not repair:
            raise GeoJSONError(f"{where}: invalid geometry ({shapely.is_valid_reason(geometry)})")
        geometry = shapely.make_valid(geometry)
    classification = properties.get("classification") or {}
    if isinstance(classification, str):  # some tools write the bare name
        classification = {"name": classification}
    color = classification.get("color")
    return GeoFeature(
        geometry=geometry,
        object_type=properties.get("objectType"),
        classification=classification.get("name"),
        color=tuple(int(c) for c in color[:3]) if isinstance(color, list) else None,
        properties=properties,
        id=raw.get("id") if isinstance(raw.get("id"), str) else None,
    )


def read_geojson(path: str | os.PathLike[str], *, repair: bool = True) -> list[GeoFeature]:
    """Read every feature of a GeoJSON file (``.geojson`` or ``.geojson.gz``).

    Parameters
    ----------
    path
        File to read.
    repair
        Repair topologically invalid geometries (self-intersections, as QuPath
        sometimes writes) with :func:`shapely.make_valid` and log how many; when
        False they are an error.

    Raises
    ------
    GeoJSONError
        For unreadable JSON or malformed features, naming the feature index.
    """
    path = Path(path)
    raws = _raw_features(_load(path), path)
    features = [_parse_feature(raw, i, path, repair=repair) for i, raw in enumerate(raws)]
    repaired = sum(not shape(r["geometry"]).is_valid for r in raws) if repair else 0
    if repaired:
        log.info("%s: repaired %d invalid geometries", path, repaired)
    return features


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


def read_roi(
    path: str | os.PathLike[str],
    *,
    classes: Iterable[str] | None = None,
    object_types: Iterable[str] | None = ("annotation",),
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

    Raises
    ------
    GeoJSONError
        If the file holds no polygon after filtering.
    """
    wanted_classes = set(classes) if classes is not None else None
    wanted_types = set(object_types) if object_types is not None else None
    kept = [
        f
        for f in read_geojson(path)
        if (wanted_types is None or f.object_type is None or f.object_type in wanted_types)
        and (wanted_classes is None or f.classification in wanted_classes)
    ]
    roi = polygons_of(kept)
    if roi.is_empty:
        raise GeoJSONError(
            f"{path}: no polygon to use as a region of interest",
            hint="draw/export polygon annotations in QuPath, or check the classes filter",
        )
    return roi
