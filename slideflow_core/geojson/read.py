"""Read QuPath-style GeoJSON: annotations, detections and cells as shapely geometries.

Accepts a ``FeatureCollection``, a list of ``Feature`` objects, a single
``Feature``, a bare geometry (QuPath writes all four) or newline-delimited
features, plain or gzipped. Coordinates are level-0 pixels with y pointing
down, as QuPath writes them; pass ``offset`` to move them into another frame
(see :func:`slideflow_core.geojson.objects.origin_offset` for slides with
OpenSlide bounds, whose QuPath coordinates start at the bounds origin).

Files are streamed one feature at a time and every coordinate is checked
(:mod:`slideflow_core.geojson.parse` holds the limits), so a hostile or huge
file gives a :class:`GeoJSONError` naming the file and feature, and a region
of interest costs memory for its polygons, not for the file's text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from slideflow_core.geojson.parse import (
    CoordinateBudget,
    GeoJSONError,
    build_geometry,
    feature_id,
    iter_raw_features,
)

log = logging.getLogger(__name__)


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


def _geometry(
    raw: Any,
    where: str,
    *,
    repair: bool,
    offset: tuple[float, float],
    budget: CoordinateBudget,
) -> tuple[BaseGeometry, bool]:
    """The geometry and whether it had to be repaired."""
    geometry = build_geometry(raw, where, offset=offset, budget=budget)
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
    raw: Any,
    where: str,
    *,
    repair: bool,
    offset: tuple[float, float],
    budget: CoordinateBudget,
) -> tuple[GeoFeature, bool]:
    """The feature and whether its geometry had to be repaired."""
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise GeoJSONError(f"{where} is not a GeoJSON Feature")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise GeoJSONError(f"{where}: 'properties' must be an object")
    budget.in_feature = 0
    geometry, repaired = _geometry(
        raw.get("geometry"), where, repair=repair, offset=offset, budget=budget
    )
    nucleus = None
    if raw.get("nucleusGeometry") is not None:
        nucleus, fixed = _geometry(
            raw["nucleusGeometry"],
            f"{where} nucleusGeometry",
            repair=repair,
            offset=offset,
            budget=budget,
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


def iter_geojson(
    path: str | os.PathLike[str],
    *,
    repair: bool = True,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Iterator[GeoFeature]:
    """Yield the features of a GeoJSON file one at a time, holding one feature's text at most.

    Same parameters as :func:`read_geojson`; use this for large files whose
    features are filtered or reduced as they come.

    Raises
    ------
    GeoJSONError
        For an unreadable, empty, truncated or malformed file, or one beyond
        the limits of :mod:`slideflow_core.geojson.parse`, naming the file and
        the feature (index and id).
    """
    path = Path(path)
    shift = (float(offset[0]), float(offset[1]))
    budget = CoordinateBudget()
    repaired = 0
    for index, raw in enumerate(iter_raw_features(path)):
        try:
            feature, fixed = _parse_feature(
                raw, f"{path}: feature {index}", repair=repair, offset=shift, budget=budget
            )
        except GeoJSONError as exc:
            ident = feature_id(raw)
            if ident is None:
                raise
            raise GeoJSONError(f"{exc.message} [feature id {ident!r}]", hint=exc.hint) from None
        repaired += fixed
        yield feature
    if repaired:
        log.info("%s: repaired %d invalid geometries", path, repaired)


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
        For unreadable JSON, malformed features or a file beyond the limits
        (nesting, coordinate count, finite coordinates within ±1e9 px), naming
        the file and the feature.
    """
    return list(iter_geojson(path, repair=repair, offset=offset))


def _polygonal_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The non-empty polygons of ``geometry`` (members of collections included)."""
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    return [p for g in getattr(geometry, "geoms", ()) for p in _polygonal_parts(g)]


def _components(parts: list[Polygon]) -> np.ndarray:
    """A label per polygon, equal for polygons linked by a chain of intersections."""
    left, right = shapely.STRtree(parts).query(parts, predicate="intersects")
    labels = np.arange(len(parts))
    while True:  # min-label propagation with pointer jumping: a few rounds in practice
        merged = labels.copy()
        np.minimum.at(merged, left, labels[right])
        while not np.array_equal(merged, merged[merged]):
            merged = merged[merged]
        if np.array_equal(merged, labels):
            return labels
        labels = merged


def _dissolve(parts: list[Polygon]) -> MultiPolygon:
    """The union of ``parts`` as one valid MultiPolygon.

    Only polygons that touch or overlap are merged (per connected group); the
    rest are kept as they are. It equals ``shapely.union_all(parts)`` but needs a
    fraction of its memory and time on exports of many separate objects
    (``union_all`` of 250k small disjoint polygons peaks near 1 GB).
    """
    if not parts:
        return MultiPolygon()
    labels = _components(parts)
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    out: list[Polygon] = []
    for group in np.split(order, starts[1:]):
        if len(group) == 1:
            out.append(parts[group[0]])
        else:
            out.extend(_polygonal_parts(shapely.union_all([parts[i] for i in group])))
    return MultiPolygon(out)


def polygons_of(features: Iterable[GeoFeature]) -> MultiPolygon:
    """Union of the polygonal parts of ``features`` as one valid MultiPolygon."""
    return _dissolve([p for feature in features for p in _polygonal_parts(feature.geometry)])


def _select(
    features: Iterable[GeoFeature],
    classes: Iterable[str] | None,
    object_types: Iterable[str] | None,
) -> Iterator[GeoFeature]:
    wanted_classes = set(classes) if classes is not None else None
    wanted_types = set(object_types) if object_types is not None else None
    return (
        f
        for f in features
        if (wanted_types is None or f.object_type is None or f.object_type in wanted_types)
        and (wanted_classes is None or f.classification in wanted_classes)
    )


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
        If the file is malformed or beyond the limits (naming the feature), or
        holds no polygon after filtering.
    """
    roi = polygons_of(_select(iter_geojson(path, offset=offset), classes, object_types))
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
    by_class: dict[str | None, list[Polygon]] = {}
    for feature in _select(iter_geojson(path, offset=offset), None, object_types):
        by_class.setdefault(feature.classification, []).extend(_polygonal_parts(feature.geometry))
    labels = {name: _dissolve(parts) for name, parts in by_class.items()}
    labels = {name: region for name, region in labels.items() if not region.is_empty}
    if not labels:
        raise GeoJSONError(
            f"{path}: no polygon annotation to use as labels",
            hint="draw polygon annotations with classes in QuPath and export them as GeoJSON",
        )
    return labels
