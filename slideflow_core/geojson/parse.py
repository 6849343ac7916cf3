"""GeoJSON read safely: features streamed one at a time, geometries built from checked coordinates.

A GeoJSON file may come from anywhere, so reading one must fail with a
:class:`GeoJSONError` naming the file and feature, never with a raw parser or
GEOS exception, and must not need memory in proportion to the file: the text
is decoded one feature at a time (a ``FeatureCollection``, a top-level array,
a single object, or newline-delimited / RFC 8142 sequences), and every
coordinate array is checked for shape, type, finiteness and range before
shapely sees it. The limits below say how much one feature and one file may
hold.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import shapely
from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
)
from shapely.geometry.base import BaseGeometry

from slideflow_core.errors import SlideflowError

#: Characters of one feature's JSON text. Decoded, a coordinate costs 8-16 times its
#: text, so this caps the memory of one feature at a few hundred MB; a QuPath outline
#: of a whole tissue section at full resolution (~1M vertices) is about 20 MB.
MAX_FEATURE_CHARS = 32 * 2**20
#: Positions in one feature (geometry and nucleus together): generous for that outline,
#: and bounds the GEOS work of repairing or merging a single feature.
MAX_COORDINATES_PER_FEATURE = 2_000_000
#: Positions in one file: ~1.5M QuPath cell detections of ~30 vertices; 50M positions
#: already take over a GB as shapely geometries.
MAX_COORDINATES_PER_FILE = 50_000_000
#: Largest |x| or |y| in level-0 pixels. Slides are < 1e6 px a side, so anything beyond
#: is a unit or export error; below it float64 (and GEOS) resolve far finer than a pixel.
MAX_ABS_COORDINATE_PX = 1e9
#: GeometryCollections inside GeometryCollections: QuPath writes none, GEOS recurses on them.
MAX_COLLECTION_DEPTH = 4
#: How deep each geometry type nests its ``coordinates`` (fixed by RFC 7946; checked exactly).
COORDINATE_DEPTH = {
    "Point": 1,
    "MultiPoint": 2,
    "LineString": 2,
    "MultiLineString": 3,
    "Polygon": 3,
    "MultiPolygon": 4,
}
GEOMETRY_TYPES = frozenset({*COORDINATE_DEPTH, "GeometryCollection"})

_CHUNK_CHARS = 2**20
_BLANK = re.compile(r"[ \t\n\r\x1e]*")  # JSON whitespace and the RFC 8142 record separator
_DECODER = json.JSONDecoder()
_HINT = "export it again from QuPath (File > Export objects as GeoJSON)"


class GeoJSONError(SlideflowError):
    """A GeoJSON file is malformed or too large; the message names the file and feature."""


def feature_id(raw: Any) -> str | None:
    """The ``id`` of a raw feature as messages show it (shortened), if it has one."""
    ident = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(ident, (str, int)) and not isinstance(ident, bool):
        return str(ident)[:80]
    return None


def _open(path: Path) -> TextIO:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig")
        return open(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise GeoJSONError(f"GeoJSON file not found: {path}") from None
    except OSError as exc:
        raise GeoJSONError(f"{path}: cannot be opened ({exc})") from exc


class _Text:
    """The file's characters, decoded one JSON value at a time (never more than one held)."""

    def __init__(self, handle: TextIO, path: Path) -> None:
        self.handle, self.path = handle, path
        self.text, self.pos, self.eof = "", 0, False
        self.line = 1  # line number of self.text[0]

    def _more(self, chars: int) -> bool:
        """Append at least ``chars`` characters, dropping what was consumed (False at the end)."""
        if self.eof:
            return False
        try:
            chunk = self.handle.read(max(chars, _CHUNK_CHARS))
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise GeoJSONError(
                f"{self.path}: cannot be read past line {self.line} ({exc})", hint=_HINT
            ) from exc
        if not chunk:
            self.eof = True
            return False
        self.line += self.text.count("\n", 0, self.pos)
        self.text, self.pos = self.text[self.pos :] + chunk, 0
        return True

    def where(self, pos: int) -> str:
        line = self.line + self.text.count("\n", 0, pos)
        column = pos - self.text.rfind("\n", 0, pos)
        return f"line {line} column {column}"

    def peek(self) -> str:
        """The next character that is not blank ('' at the end of the file)."""
        while True:
            self.pos = _BLANK.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more(_CHUNK_CHARS):
                return ""

    def take(self, expected: str, context: str) -> None:
        found = self.peek()
        if found != expected:
            raise self.unexpected(found, f"'{expected}' {context}")
        self.pos += 1

    def unexpected(self, found: str, wanted: str) -> GeoJSONError:
        if not found:
            return GeoJSONError(
                f"{self.path}: the file ends where {wanted} was expected; is it truncated?",
                hint=_HINT,
            )
        return GeoJSONError(
            f"{self.path}: expected {wanted} at {self.where(self.pos)}, found {found!r}",
            hint=_HINT,
        )

    def value(self, what: str) -> Any:
        """Decode the JSON value at the cursor (``what`` names it in errors)."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:
                raise GeoJSONError(
                    f"{self.path}: {what} is nested too deeply to be GeoJSON "
                    f"(at {self.where(self.pos)})",
                    hint="GeoJSON coordinates nest at most 4 arrays deep (a MultiPolygon)",
                ) from None
            except json.JSONDecodeError as exc:
                # Where a value merely runs past the buffer the decoder stops within a few
                # characters of its end (or inside a string): read on, up to the limit.
                held = len(self.text) - self.pos
                cut = exc.pos >= len(self.text) - 8 or exc.msg.startswith("Unterminated string")
                if cut and held > MAX_FEATURE_CHARS:
                    raise self._too_large(what) from None
                if cut and self._more(held):
                    continue
                raise self._invalid(what, exc) from None
            except ValueError:  # an integer past Python's 4300-digit conversion limit
                raise GeoJSONError(
                    f"{self.path}: {what} holds a number too long to read "
                    f"(thousands of digits, at {self.where(self.pos)})",
                    hint=_HINT,
                ) from None
            if end == len(self.text) and self._more(end - self.pos):
                continue  # a number at the end of the buffer may go on in the next chunk
            if end - self.pos > MAX_FEATURE_CHARS:
                raise self._too_large(what)
            self.pos = end
            return value

    def _invalid(self, what: str, exc: json.JSONDecodeError) -> GeoJSONError:
        truncated = self.eof and (
            exc.pos >= len(self.text.rstrip()) or exc.msg.startswith("Unterminated string")
        )
        ending = "; the file ends inside it: is it truncated?" if truncated else ""
        return GeoJSONError(
            f"{self.path}: {what} is not valid JSON ({exc.msg} at {self.where(exc.pos)}){ending}",
            hint=_HINT,
        )

    def _too_large(self, what: str) -> GeoJSONError:
        return GeoJSONError(
            f"{self.path}: {what} (at {self.where(self.pos)}) is longer than "
            f"{MAX_FEATURE_CHARS:,} characters",
            hint="split or simplify the geometry before export",
        )


def iter_raw_features(path: Path) -> Iterator[Any]:
    """Each feature of a GeoJSON file as decoded JSON, reading one feature at a time.

    A ``FeatureCollection`` yields its ``features``, a top-level array its
    elements, newline-delimited features (or an RFC 8142 sequence) each
    object, and a single ``Feature`` or bare geometry itself (a geometry
    wrapped as a feature).

    Raises
    ------
    GeoJSONError
        For an unreadable, empty, truncated or malformed file, or a feature
        larger than :data:`MAX_FEATURE_CHARS`.
    """
    with _open(path) as handle:
        text = _Text(handle, path)
        first = text.peek()
        if first == "[":
            yield from _array(text)
        elif first == "{":
            yield from _top_object(text)
        elif not first:
            raise GeoJSONError(f"{path}: the file is empty", hint=_HINT)
        else:
            raise text.unexpected(first, "a GeoJSON object or array")
        extra = text.peek()
        if extra:
            raise GeoJSONError(
                f"{path}: unexpected data after the GeoJSON at {text.where(text.pos)}", hint=_HINT
            )


def _array(text: _Text) -> Iterator[Any]:
    """Elements of the features array at the cursor."""
    text.take("[", "to open the features")
    if text.peek() == "]":
        text.pos += 1
        return
    index = 0
    while True:
        yield text.value(f"feature {index}")
        index += 1
        found = text.peek()
        if found != ",":
            if found != "]":
                raise text.unexpected(found, f"',' or ']' after feature {index - 1}")
            text.pos += 1
            return
        text.pos += 1


def _top_object(text: _Text) -> Iterator[Any]:
    """The features of the top-level object and of any objects following it (NDJSON)."""
    head: dict[str, Any] = {}
    streamed = False
    text.take("{", "to open the GeoJSON object")
    if text.peek() != "}":
        while True:
            key = text.value("a member name")
            if not isinstance(key, str):
                raise text.unexpected(repr(key)[:20], "a member name in double quotes")
            text.take(":", f"after member name {key!r}")
            if key == "features" and text.peek() == "[":
                yield from _array(text)  # its type is checked once the object is closed
                streamed = True
            else:
                head[key] = text.value(f"member {key!r}")
            found = text.peek()
            if found == "}":
                break
            if found != ",":
                raise text.unexpected(found, "',' or '}' between members")
            text.pos += 1
    text.pos += 1
    kind = head.get("type")
    if streamed or kind == "FeatureCollection":
        if kind != "FeatureCollection":
            raise GeoJSONError(
                f"{text.path}: an object of type {str(kind)[:40]!r} with a 'features' array "
                "(only a FeatureCollection has features)",
                hint=_HINT,
            )
        if not streamed:
            raise GeoJSONError(f"{text.path}: FeatureCollection without a 'features' array")
        return
    if not text.peek():
        if kind in GEOMETRY_TYPES:
            head = {"type": "Feature", "geometry": head, "properties": {}}
        elif kind != "Feature":
            raise GeoJSONError(f"{text.path}: unknown GeoJSON type {kind!r}", hint=_HINT)
        yield head
        return
    yield head  # newline-delimited: the first of a sequence of features
    index = 1
    while text.peek():
        yield text.value(f"feature {index}")
        index += 1


@dataclass
class CoordinateBudget:
    """Positions read so far, checked against the per-feature and per-file limits."""

    in_file: int = 0
    in_feature: int = 0

    def spend(self, count: int, where: str) -> None:
        self.in_file += count
        self.in_feature += count
        if self.in_feature > MAX_COORDINATES_PER_FEATURE:
            raise GeoJSONError(
                f"{where}: more than {MAX_COORDINATES_PER_FEATURE:,} coordinates in one feature",
                hint="simplify the geometry before export",
            )
        if self.in_file > MAX_COORDINATES_PER_FILE:
            raise GeoJSONError(
                f"{where}: the file holds more than {MAX_COORDINATES_PER_FILE:,} coordinates",
                hint="split the export into several files",
            )


def _positions(raw: Any, where: str, kind: str, budget: CoordinateBudget) -> np.ndarray:
    """``(n, 2)`` float64 positions of one coordinate array, every value checked."""
    shape_hint = f"GeoJSON nests {kind} coordinates {COORDINATE_DEPTH[kind]} arrays deep"
    try:
        xy = np.asarray(raw) if isinstance(raw, list) and raw else np.empty((0, 2))
    except (ValueError, OverflowError):
        xy = np.empty(())  # ragged, or nested past NumPy's 64 dimensions: refused below
    if not isinstance(raw, list) or xy.ndim != 2 or xy.shape[1] not in (2, 3):
        raise GeoJSONError(f"{where}: {kind} coordinates must be [x, y] positions", hint=shape_hint)
    if xy.dtype.kind not in "iuf":
        found = "a huge integer or a null" if xy.dtype.kind == "O" else "text or true/false"
        raise GeoJSONError(
            f"{where}: {kind} coordinates must be numbers of level-0 pixels (found {found})",
            hint=f"each position is [x, y] as JSON numbers within ±{MAX_ABS_COORDINATE_PX:.0e}",
        )
    budget.spend(len(xy), where)
    xy = xy[:, :2].astype(np.float64)
    if not np.isfinite(xy).all():
        raise GeoJSONError(
            f"{where}: a {kind} coordinate is not finite (NaN or infinity)",
            hint="coordinates are level-0 pixels; fix or drop this object before export",
        )
    if len(xy) and np.abs(xy).max() > MAX_ABS_COORDINATE_PX:
        raise GeoJSONError(
            f"{where}: a {kind} coordinate ({np.abs(xy).max():.3g}) lies beyond "
            f"±{MAX_ABS_COORDINATE_PX:.0e} level-0 pixels",
            hint="coordinates are level-0 pixels; was the file exported in another unit?",
        )
    return xy


def _parts(raw: Any, where: str, kind: str) -> list[Any]:
    if not isinstance(raw, list):
        raise GeoJSONError(
            f"{where}: {kind} coordinates must be an array",
            hint=f"GeoJSON nests {kind} coordinates {COORDINATE_DEPTH[kind]} arrays deep",
        )
    return raw


def build_geometry(
    raw: Any,
    where: str,
    *,
    offset: tuple[float, float],
    budget: CoordinateBudget,
    depth: int = 0,
) -> BaseGeometry:
    """The shapely geometry of a GeoJSON geometry object, shifted by ``offset``.

    Raises
    ------
    GeoJSONError
        Naming ``where``, for a wrong type or nesting, a non-finite or
        out-of-range coordinate, too many coordinates, or a shape GEOS refuses.
    """
    if not isinstance(raw, dict):
        raise GeoJSONError(f"{where}: geometry is missing or not an object")
    kind = raw.get("type")
    if kind == "GeometryCollection":
        members = raw.get("geometries")
        if not isinstance(members, list) or depth >= MAX_COLLECTION_DEPTH:
            raise GeoJSONError(
                f"{where}: a GeometryCollection needs a 'geometries' array, "
                f"nested at most {MAX_COLLECTION_DEPTH} collections deep"
            )
        return GeometryCollection(
            [
                build_geometry(m, where, offset=offset, budget=budget, depth=depth + 1)
                for m in members
            ]
        )
    if kind not in COORDINATE_DEPTH:
        raise GeoJSONError(f"{where}: unknown geometry type {str(kind)[:40]!r}")
    coords = raw.get("coordinates")
    shift = np.asarray(offset, np.float64)

    def points(value: Any) -> np.ndarray:
        return _positions(value, where, kind, budget) + shift

    def polygon(value: Any) -> Polygon:
        rings = [points(ring) for ring in _parts(value, where, kind)]
        return Polygon(rings[0], rings[1:]) if rings else Polygon()

    try:
        if kind == "Point":
            xy = points([coords]) if coords != [] else np.empty((0, 2))
            return Point(xy[0]) if len(xy) else Point()
        if kind == "MultiPoint":
            return MultiPoint(points(coords))
        if kind == "LineString":
            return LineString(points(coords))
        if kind == "MultiLineString":
            return MultiLineString([LineString(points(c)) for c in _parts(coords, where, kind)])
        if kind == "Polygon":
            return polygon(coords)
        return MultiPolygon([polygon(p) for p in _parts(coords, where, kind)])
    except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
        reason = " ".join(str(exc).split())  # GEOS messages span lines
        raise GeoJSONError(f"{where}: malformed {kind} ({reason})") from None
