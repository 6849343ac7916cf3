"""Build QuPath GeoJSON features (as encoded text) in batches: annotations, tiles, cells.

Features are encoded straight to JSON text, many at a time, because a slide can
hold millions of them: geometry goes through GEOS (``shapely.to_geojson``)
after vectorised shifting, rounding, simplification, repair and orientation,
and tiles, whose squares need no geometry engine, are formatted directly.
Every builder follows QuPath's rules:

- ``properties.objectType`` (``annotation``, ``tile``, ``detection``, ``cell``),
  ``properties.classification`` as ``{"name", "color": [r, g, b]}`` and
  ``properties.measurements`` as a flat name → number map in which NaN and
  infinities are omitted (QuPath reads a missing measurement as NaN; a bare
  ``NaN`` token is not JSON);
- a UUID ``id`` per feature, drawn from a generator seeded by the export's
  identity (slide and layer), so exporting the same store twice gives the same
  file;
- coordinates in level-0 pixels, y down, shifted by the origin offset (see
  :func:`origin_offset`), rounded to ``precision`` decimals;
- closed rings, exterior counter-clockwise and holes clockwise as RFC 7946
  asks (orientation measured on the coordinate numbers, so they look
  clockwise on screen where y points down), no ``crs`` member;
- invalid polygons repaired with :func:`shapely.make_valid` (keeping the
  polygonal parts) or dropped when nothing polygonal is left, counted in
  :class:`GeometryStats`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from slideflow_core.errors import SlideflowError

OBJECT_TYPES = ("annotation", "tile", "detection", "cell")
ORIGINS = ("qupath", "slide")

# A qualitative palette (colour-blind-safe first) for classes without a colour.
_PALETTE = (
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (120, 94, 240),
    (100, 143, 255),
    (220, 38, 127),
    (254, 97, 0),
    (136, 204, 238),
)


class GeoJSONEncodeError(SlideflowError):
    """A feature handed to the writer cannot be encoded as GeoJSON."""


@dataclass(frozen=True, kw_only=True)
class Classification:
    """A QuPath classification: a class name and its display colour.

    Attributes
    ----------
    name
        Class name (non-empty).
    color
        ``(r, g, b)``, each 0–255.
    """

    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"classification name must be a non-empty string, got {self.name!r}")
        color = tuple(self.color)
        if len(color) != 3 or not all(isinstance(c, (int, np.integer)) for c in color):
            raise ValueError(f"classification {self.name!r}: color must be 3 ints, got {color!r}")
        if not all(0 <= c <= 255 for c in color):
            raise ValueError(f"classification {self.name!r}: color values must be 0-255")
        object.__setattr__(self, "color", tuple(int(c) for c in color))

    @classmethod
    def named(cls, name: str, colors: Mapping[str, Sequence[int]] | None = None) -> Classification:
        """The classification ``name`` with its colour from ``colors`` or a stable palette pick."""
        if colors and name in colors:
            return cls(name=name, color=tuple(int(c) for c in colors[name][:3]))
        digest = hashlib.sha1(name.encode("utf-8")).digest()
        return cls(name=name, color=_PALETTE[digest[0] % len(_PALETTE)])

    def json(self) -> str:
        """The ``"classification": {...}`` member, encoded."""
        r, g, b = self.color
        return f'"classification":{{"name":{json.dumps(self.name)},"color":[{r},{g},{b}]}}'


def origin_offset(bounds: Sequence[float] | None, origin: str) -> tuple[float, float]:
    """The ``(x, y)`` subtracted from level-0 coordinates to express them in ``origin``.

    Slide stores hold coordinates in the slide's full level-0 frame, the frame
    of OpenSlide's ``read_region``. QuPath opens OpenSlide formats that declare
    bounds (``openslide.bounds-x/y``: MIRAX, some NDPI and Aperio files)
    cropped to those bounds, so its origin is the bounds' top-left corner and an
    object at slide pixel ``(x, y)`` is at ``(x - bounds_x, y - bounds_y)`` in
    QuPath (QuPath issue #820). ``origin="qupath"`` (the default of every
    export) therefore subtracts the bounds offset; ``origin="slide"`` keeps the
    full frame, for tools that read the slide with OpenSlide directly and for
    QuPath images imported with ``--no-crop``. Slides without bounds have no
    offset either way. Read a QuPath export back with
    ``read_geojson(path, offset=origin_offset(bounds, "qupath"))``.

    Raises
    ------
    ValueError
        For an unknown ``origin``.
    """
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    if origin == "slide" or not bounds:
        return (0.0, 0.0)
    return (float(bounds[0]), float(bounds[1]))


@dataclass
class GeometryStats:
    """Counts of polygons repaired or dropped while encoding (logged by the exporter)."""

    fixed: int = 0
    dropped: int = 0

    def add(self, other: GeometryStats) -> None:
        """Add another count to this one."""
        self.fixed += other.fixed
        self.dropped += other.dropped


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class IdSource:
    """UUID strings (version 4 layout) from a generator seeded by a name.

    Parameters
    ----------
    seed_name
        What is exported (e.g. ``"<slide_id>/tiles"``); the same name gives the
        same ids, so re-exports are byte-identical.
    """

    def __init__(self, seed_name: str) -> None:
        seed = int.from_bytes(hashlib.sha256(seed_name.encode("utf-8")).digest()[:8], "little")
        self._rng = np.random.default_rng(seed)

    def take(self, n: int) -> list[str]:
        """``n`` new ids."""
        if n <= 0:
            return []
        raw = self._rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
        digits = np.empty((n, 32), dtype=np.uint8)
        digits[:, 0::2] = _HEX[raw >> 4]
        digits[:, 1::2] = _HEX[raw & 0x0F]
        # 8-4-4-4-12 hex digits with dashes, one id per line, split once.
        text = np.full((n, 37), ord("-"), dtype=np.uint8)
        for start, stop, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
            text[:, at : at + stop - start] = digits[:, start:stop]
        text[:, 36] = ord("\n")
        return text.tobytes().decode("ascii").splitlines()


def measurement_members(columns: Mapping[str, np.ndarray], n: int) -> list[str]:
    """Per row, the encoded ``"measurements":{...}`` member (NaN/inf omitted).

    Values are written with 7 significant digits (float32 precision, which is
    what QuPath keeps); booleans as 0/1.
    """
    keys = [json.dumps(str(name)) + ":" for name in columns]
    if not keys:
        return ['"measurements":{}'] * n
    block = np.empty((n, len(keys)), np.float64)
    for j, (name, values) in enumerate(columns.items()):
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"measurement {name!r} has shape {values.shape}, expected ({n},)")
        block[:, j] = values
    # One format call per row when every value is finite (the common case).
    template = '"measurements":{' + ",".join(key + "%.7g" for key in keys) + "}"
    complete = np.isfinite(block).all(axis=1).tolist()
    return [
        template % tuple(row) if ok else _partial_measurements(keys, row)
        for row, ok in zip(block.tolist(), complete, strict=True)
    ]


def _partial_measurements(keys: list[str], row: list[float]) -> str:
    values = ",".join(f"{key}{v:.7g}" for key, v in zip(keys, row, strict=True) if math.isfinite(v))
    return '"measurements":{' + values + "}"


def _feature(ident: str, geometry: str, properties: str, nucleus: str | None = None) -> str:
    extra = f',"nucleusGeometry":{nucleus}' if nucleus is not None else ""
    return (
        f'{{"type":"Feature","id":"{ident}","geometry":{geometry}{extra},'
        f'"properties":{{{properties}}}}}'
    )


def _polygonal(geometry: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of a repaired geometry, or None when there is none."""
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    merged = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    return None if merged.is_empty or merged.area <= 0 else merged


def clean_polygons(
    geometries: np.ndarray,
    *,
    offset: tuple[float, float] = (0.0, 0.0),
    precision: int | None = 2,
    simplify_px: float | None = None,
    stats: GeometryStats | None = None,
) -> np.ndarray:
    """Shift, round, simplify, repair and orient polygons; dropped ones become ``None``.

    Parameters
    ----------
    geometries
        Object array of shapely geometries (``None`` entries stay ``None``).
    offset
        Subtracted from every coordinate (see :func:`origin_offset`).
    precision
        Decimals kept (``None`` keeps full precision).
    simplify_px
        Douglas–Peucker tolerance in pixels, topology preserved (``None``: off).
    stats
        Incremented with the repaired and dropped counts.
    """
    geoms = np.array(geometries, dtype=object, copy=True)
    present = np.array([g is not None for g in geoms], dtype=bool)
    stats = stats if stats is not None else GeometryStats()
    if not present.any():
        return geoms
    work = geoms[present]
    if offset != (0.0, 0.0) or precision is not None:
        shift = np.asarray(offset, dtype=np.float64)
        digits = precision

        def move(xy: np.ndarray) -> np.ndarray:
            xy = xy - shift
            return np.round(xy, digits) if digits is not None else xy

        work = shapely.transform(work, move)  # new geometries: the caller's stay as they are
    if simplify_px:
        work = shapely.simplify(work, simplify_px, preserve_topology=True)
    polygonal = np.isin(shapely.get_type_id(work), (3, 6))  # Polygon, MultiPolygon
    valid = shapely.is_valid(work) & polygonal & ~shapely.is_empty(work)
    for i in np.flatnonzero(~valid):
        fixed = _polygonal(shapely.make_valid(work[i])) if not work[i].is_empty else None
        work[i] = fixed
        if fixed is None:
            stats.dropped += 1
        else:
            stats.fixed += 1
    kept = np.array([g is not None for g in work], dtype=bool)
    work[kept] = shapely.orient_polygons(work[kept], exterior_cw=False)
    geoms[present] = work
    return geoms


def encode_geometries(geometries: np.ndarray) -> list[str | None]:
    """GeoJSON text of each geometry (``None`` stays ``None``)."""
    out: list[str | None] = [None] * len(geometries)
    present = np.flatnonzero([g is not None for g in geometries])
    if len(present):
        texts = shapely.to_geojson(np.asarray(geometries, dtype=object)[present])
        for i, text in zip(present.tolist(), texts.tolist(), strict=True):
            out[i] = text
    return out


def annotation_features(
    geometries: Iterable[BaseGeometry],
    *,
    ids: IdSource,
    classification: Classification | None = None,
    name: str | None = None,
    locked: bool = False,
    offset: tuple[float, float] = (0.0, 0.0),
    precision: int | None = 2,
    simplify_px: float | None = None,
    stats: GeometryStats | None = None,
) -> list[str]:
    """Encoded ``annotation`` features, one per polygon (a MultiPolygon stays one feature).

    Parameters
    ----------
    geometries
        Polygons or MultiPolygons in the slide's level-0 frame.
    ids
        Where feature ids come from.
    classification
        Class of every annotation (unclassified when None).
    name
        ``properties.name`` shown in QuPath's annotation list.
    locked
        ``properties.isLocked``.
    offset, precision, simplify_px, stats
        See :func:`clean_polygons`.
    """
    cleaned = clean_polygons(
        np.array(list(geometries), dtype=object),
        offset=offset,
        precision=precision,
        simplify_px=simplify_px,
        stats=stats,
    )
    texts = [t for t in encode_geometries(cleaned) if t is not None]
    members = ['"objectType":"annotation"']
    if name is not None:
        members.append(f'"name":{json.dumps(name)}')
    if classification is not None:
        members.append(classification.json())
    members.append(f'"isLocked":{"true" if locked else "false"}')
    properties = ",".join(members)
    return [_feature(i, t, properties) for i, t in zip(ids.take(len(texts)), texts, strict=True)]


def _number_text(values: np.ndarray) -> list[str]:
    if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**53):
        return [str(v) for v in values.astype(np.int64).tolist()]
    return [repr(v) for v in values.tolist()]


def tile_features(
    coords: np.ndarray,
    extent_px: float,
    *,
    ids: IdSource,
    measurements: Mapping[str, np.ndarray] | None = None,
    classes: Sequence[Classification | None] | None = None,
    object_type: str = "tile",
    offset: tuple[float, float] = (0.0, 0.0),
    precision: int = 2,
) -> list[str]:
    """Encoded square ``tile`` (or ``detection``) features for one batch of tiles.

    Parameters
    ----------
    coords
        ``(n, 2)`` level-0 top-left corners.
    extent_px
        Tile side in level-0 pixels.
    ids
        Where feature ids come from.
    measurements
        Name → ``(n,)`` values (NaN omitted per feature).
    classes
        Per-tile classification (or None for unclassified tiles).
    object_type
        ``"tile"`` or ``"detection"``.
    offset
        Subtracted from every coordinate (see :func:`origin_offset`).
    precision
        Decimals kept for non-integer corners.
    """
    if object_type not in ("tile", "detection"):
        raise ValueError(f"tiles are exported as 'tile' or 'detection', not {object_type!r}")
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n = len(coords)
    x0 = np.round(coords[:, 0] - offset[0], precision)
    y0 = np.round(coords[:, 1] - offset[1], precision)
    x1 = np.round(x0 + extent_px, precision)
    y1 = np.round(y0 + extent_px, precision)
    heads = _heads(object_type, classes, n)
    values = measurement_members(measurements or {}, n)
    rows = zip(
        ids.take(n),
        _number_text(x0),
        _number_text(y0),
        _number_text(x1),
        _number_text(y1),
        heads,
        values,
        strict=True,
    )
    # The square counter-clockwise on the coordinate numbers (RFC 7946), closed.
    return [
        f'{{"type":"Feature","id":"{i}","geometry":{{"type":"Polygon","coordinates":'
        f'[[[{a},{b}],[{c},{b}],[{c},{d}],[{a},{d}],[{a},{b}]]]}},"properties":{{{h}{m}}}}}'
        for i, a, b, c, d, h, m in rows
    ]


def _heads(object_type: str, classes: Sequence[Classification | None] | None, n: int) -> list[str]:
    """Per row, the encoded ``objectType`` and ``classification`` members with a trailing comma."""
    head = f'"objectType":"{object_type}",'
    if classes is None:
        return [head] * n
    encoded = {c: head + c.json() + "," for c in set(classes) if c is not None}
    return [encoded[c] if c is not None else head for c in classes]


def cell_features(
    nuclei: np.ndarray,
    *,
    ids: IdSource,
    cells: np.ndarray | None = None,
    classes: Sequence[Classification | None] | None = None,
    measurements: Mapping[str, np.ndarray] | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    precision: int | None = 2,
    simplify_px: float | None = None,
    stats: GeometryStats | None = None,
) -> list[str]:
    """Encoded ``cell`` features (cell boundary + ``nucleusGeometry``) or nucleus ``detection``.

    A row with a cell boundary becomes a QuPath ``cell`` whose ``geometry`` is
    the boundary and ``nucleusGeometry`` the nucleus; a row with only a nucleus
    becomes a ``detection`` of the nucleus. Rows whose nucleus cannot be
    repaired are dropped (counted in ``stats``); an unrepairable boundary
    turns the row into a nucleus ``detection``.

    Parameters
    ----------
    nuclei
        Object array of nucleus polygons (level-0 px).
    ids
        Where feature ids come from.
    cells
        Object array of cell boundaries (``None`` entries allowed), or None.
    classes
        Per-row classification.
    measurements
        Name → ``(n,)`` values.
    offset, precision, simplify_px, stats
        See :func:`clean_polygons`.
    """
    n = len(nuclei)
    options = {"offset": offset, "precision": precision, "simplify_px": simplify_px}
    stats = stats if stats is not None else GeometryStats()
    nucleus_text = encode_geometries(clean_polygons(nuclei, stats=stats, **options))
    cell_text: list[str | None] = [None] * n
    if cells is not None:
        cell_stats = GeometryStats()
        cell_text = encode_geometries(clean_polygons(cells, stats=cell_stats, **options))
        stats.fixed += cell_stats.fixed
    values = measurement_members(measurements or {}, n)
    kept = [k for k in range(n) if nucleus_text[k] is not None]
    cell_heads, detection_heads = _heads("cell", classes, n), _heads("detection", classes, n)
    out = []
    for ident, k in zip(ids.take(len(kept)), kept, strict=True):
        cell = cell_text[k]
        if cell is None:
            out.append(_feature(ident, nucleus_text[k], detection_heads[k] + values[k]))
        else:
            out.append(_feature(ident, cell, cell_heads[k] + values[k], nucleus=nucleus_text[k]))
    return out


def feature_text(feature: Mapping[str, Any], index: int = 0) -> str:
    """Encode one feature given as a mapping, dropping non-finite measurements.

    Raises
    ------
    GeoJSONEncodeError
        If the feature holds another non-finite number or a value JSON cannot hold.
    """
    properties = dict(feature.get("properties") or {})
    values = properties.get("measurements")
    if isinstance(values, Mapping):
        properties["measurements"] = {
            k: v for k, v in values.items() if v is not None and np.isfinite(float(v))
        }
    clean = {**feature, "properties": properties}
    try:
        return json.dumps(clean, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise GeoJSONEncodeError(
            f"feature {index} cannot be written as GeoJSON ({exc})",
            hint="measurements must be finite numbers and properties plain JSON values",
        ) from exc
