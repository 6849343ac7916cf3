"""The viewer's local web server: Deep Zoom tiles, overlay data and the bundled web page.

Standard library only (``ThreadingHTTPServer``), bound to 127.0.0.1 on a free
port. Every request is validated before anything is read: its ``Host`` header
must name the bound address (``127.0.0.1:PORT`` or ``localhost:PORT``), else
403, so a web page that rebinds its own domain name to 127.0.0.1 cannot read
the slides through the user's browser (DNS rebinding); slides are looked up by
id in the catalog fixed at start (a URL never becomes a file path), static
files must resolve inside the package's ``static`` folder, numbers must parse
and lie in range. Bad addresses get 404, bad parameters 400, and an unexpected
failure 500 with the server still running. No answer carries a file-system
path: errors name slides by id (the full message goes to the log).

Routes (all ``GET``)::

    /                                    the viewer page
    /static/<file>                       its scripts, styles, OpenSeadragon
    /api/slides                          served slides
    /api/slides/<id>                     one slide: size, runs and their columns, layers
    /api/slides/<id>/tissue              tissue outline as GeoJSON annotations
    /api/slides/<id>/heatmap?run=&column=&cmap=      colour range and raster placement
    /api/slides/<id>/heatmap.png?run=&column=&cmap=  the raster (one pixel per tile stride)
    /api/slides/<id>/at?x=&y=&run=       the tile under a level-0 point, with measurements
    /api/slides/<id>/cells?bbox=x0,y0,x1,y1          cells in a box (GeoJSON), high zoom only
    /dzi/<id>.dzi                        Deep Zoom descriptor
    /dzi/<id>_files/<level>/<col>_<row>.jpeg         Deep Zoom tiles
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from PIL import Image

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.cells import CellTable
from slideflow_core.geojson.objects import (
    Classification,
    IdSource,
    annotation_features,
)
from slideflow_core.geojson.overlays import StoreOverlays
from slideflow_core.slides import Slide, open_slide
from slideflow_core.viewer.catalog import ServedSlide, build_catalog
from slideflow_core.viewer.dzi import DeepZoom, TileAddressError
from slideflow_core.viewer.heatmap import colorize, colormaps, tile_raster, tile_values

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
#: An absolute path left in an error message once the catalog's own paths are named:
#: a word that starts with a slash or backslash (after an optional drive letter).
_PATH = re.compile(r"(?<![^\s'\"(=])(?:[A-Za-z]:)?[/\\][^\s'\"]+")
_TILE = re.compile(r"^(\d{1,6})_(\d{1,6})\.jpe?g$")
_LEVEL = re.compile(r"^\d{1,3}$")
#: Widest box (level-0 px a side) for which cells are sent; beyond it the page asks to zoom in.
CELL_MAX_SPAN_PX = 6000
CELL_LIMIT = 5000


@dataclass(frozen=True)
class Response:
    """An HTTP response: status, body and content type."""

    status: int
    body: bytes
    content_type: str = "application/json"


class HTTPError(SlideflowError):
    """A request the viewer refuses (status 400 or 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any) -> Response:
    return Response(200, json.dumps(payload, allow_nan=False).encode("utf-8"))


def _geojson(features: list[str], **extra: Any) -> Response:
    members = "".join(f",{json.dumps(k)}:{json.dumps(v)}" for k, v in extra.items())
    body = '{"type":"FeatureCollection","features":[' + ",".join(features) + "]" + members + "}"
    return Response(200, body.encode("utf-8"), "application/geo+json")


def _segments(raw_path: str) -> list[str]:
    """Path segments, each percent-decoded once; hostile segments are a 404."""
    path = urlsplit(raw_path).path
    segments = []
    for raw in path.split("/"):
        if not raw:
            continue
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise HTTPError(404, "not found") from None
        if segment in (".", "..") or any(c in segment for c in "/\\\x00") or ":" in segment:
            raise HTTPError(404, "not found")
        segments.append(segment)
    return segments


def _number(query: dict[str, list[str]], name: str, *, default: float | None = None) -> float:
    values = query.get(name)
    if not values:
        if default is None:
            raise HTTPError(400, f"missing parameter {name!r}")
        return default
    try:
        value = float(values[0])
    except ValueError:
        raise HTTPError(400, f"parameter {name!r} must be a number") from None
    if not math.isfinite(value):
        raise HTTPError(400, f"parameter {name!r} must be finite")
    return value


def _text(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values and values[0] else None


class ViewerApp:
    """Request routing over a fixed catalog of slides (no HTTP machinery; testable alone).

    Parameters
    ----------
    catalog
        Served slides by id.
    """

    def __init__(self, catalog: dict[str, ServedSlide]) -> None:
        self.catalog = catalog
        self._lock = threading.Lock()
        self._slides: dict[str, Slide] = {}
        self._zooms: dict[str, DeepZoom] = {}
        self._overlays: dict[str, StoreOverlays] = {}
        self._cells: dict[str, CellTable | None] = {}
        self._rasters: dict[tuple[str, str | None, str | None, str], Response] = {}

    # -- lookups ------------------------------------------------------------------
    def _served(self, slide_id: str) -> ServedSlide:
        served = self.catalog.get(slide_id)
        if served is None:
            raise HTTPError(404, "no such slide")
        return served

    def _cached(self, cache: dict[str, Any], slide_id: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if slide_id not in cache:
                cache[slide_id] = make()
            return cache[slide_id]

    def slide(self, slide_id: str) -> Slide:
        """The open slide ``slide_id``."""
        served = self._served(slide_id)
        return self._cached(
            self._slides, slide_id, lambda: open_slide(served.slide_path, mpp=served.mpp)
        )

    def zoom(self, slide_id: str) -> DeepZoom:
        """The Deep Zoom pyramid of ``slide_id``."""
        slide = self.slide(slide_id)
        return self._cached(self._zooms, slide_id, lambda: DeepZoom(slide))

    def overlays(self, slide_id: str) -> StoreOverlays:
        """The store overlays of ``slide_id`` (404 when it was opened without a store)."""
        served = self._served(slide_id)
        if served.store is None:
            raise HTTPError(404, "this slide has no store")
        return self._cached(self._overlays, slide_id, lambda: StoreOverlays(served.store))

    def cells(self, slide_id: str) -> CellTable | None:
        """The cell table of ``slide_id``, if any."""
        served = self._served(slide_id)
        if served.store is None:
            return None
        overlays = self.overlays(slide_id)
        return self._cached(self._cells, slide_id, overlays.cell_table)

    def public(self, text: str) -> str:
        """``text`` with every file-system path replaced by what it is, for a response body."""
        named = []
        for served in self.catalog.values():
            named.append((served.slide_path, f"slide {served.slide_id!r}"))
            if served.store is not None:
                named.append((served.store, f"store of slide {served.slide_id!r}"))
        # Longest first, so a store inside the slide's folder is not named by its prefix.
        for path, label in sorted(named, key=lambda item: -len(str(item[0]))):
            text = text.replace(str(path), label)
        return _PATH.sub("<path>", text)

    def close(self) -> None:
        """Close every slide opened so far."""
        with self._lock:
            slides, self._slides = self._slides, {}
            self._zooms = {}
        for slide in slides.values():
            slide.close()

    # -- routing ------------------------------------------------------------------
    def handle(self, raw_path: str) -> Response:
        """Answer one ``GET`` request line path (with its query string)."""
        try:
            return self._route(_segments(raw_path), parse_qs(urlsplit(raw_path).query))
        except HTTPError as exc:
            return Response(exc.status, json.dumps({"error": exc.message}).encode("utf-8"))
        except TileAddressError as exc:
            return Response(404, json.dumps({"error": str(exc)}).encode("utf-8"))
        except SlideflowError as exc:
            log.warning("%s: %s", raw_path, exc)
            return Response(404, json.dumps({"error": self.public(exc.message)}).encode("utf-8"))

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> Response:
        if not parts or parts == ["index.html"]:
            return self._static(["index.html"])
        head, rest = parts[0], parts[1:]
        if head == "static":
            return self._static(rest)
        if head == "dzi":
            return self._dzi(rest)
        if head == "api" and rest[:1] == ["slides"]:
            return self._api(rest[1:], query)
        raise HTTPError(404, "not found")

    def _static(self, rest: list[str]) -> Response:
        if not rest:
            raise HTTPError(404, "not found")
        path = STATIC.joinpath(*rest).resolve()
        kind = _TYPES.get(path.suffix.lower())
        if kind is None or not path.is_relative_to(STATIC) or not path.is_file():
            raise HTTPError(404, "not found")
        return Response(200, path.read_bytes(), kind)

    def _dzi(self, rest: list[str]) -> Response:
        if len(rest) == 1 and rest[0].endswith(".dzi"):
            zoom = self.zoom(rest[0][: -len(".dzi")])
            return Response(200, zoom.dzi().encode("utf-8"), "application/xml")
        if len(rest) == 3 and rest[0].endswith("_files"):
            slide_id = rest[0][: -len("_files")]
            self._served(slide_id)
            match = _TILE.match(rest[2])
            if not _LEVEL.match(rest[1]) or match is None:
                raise HTTPError(404, "not a tile address")
            zoom = self.zoom(slide_id)
            data = zoom.tile(int(rest[1]), int(match.group(1)), int(match.group(2)))
            return Response(200, data, "image/jpeg")
        raise HTTPError(404, "not found")

    def _api(self, rest: list[str], query: dict[str, list[str]]) -> Response:
        if not rest:
            return _json([self._summary(s) for s in self.catalog.values()])
        slide_id, action = rest[0], rest[1:]
        served = self._served(slide_id)
        if not action:
            return _json(self._details(served))
        if len(action) != 1:
            raise HTTPError(404, "not found")
        name = action[0]
        if name == "tissue":
            return self._tissue(slide_id)
        if name in ("heatmap", "heatmap.png"):
            return self._heatmap(slide_id, query, png=name.endswith(".png"))
        if name == "at":
            return self._at(slide_id, query)
        if name == "cells":
            return self._cells_in(slide_id, query)
        raise HTTPError(404, "not found")

    # -- endpoints ----------------------------------------------------------------
    def _summary(self, served: ServedSlide) -> dict[str, Any]:
        return {"id": served.slide_id, "name": served.slide_path.name, "store": bool(served.store)}

    def _details(self, served: ServedSlide) -> dict[str, Any]:
        slide = self.slide(served.slide_id)
        width, height = slide.dimensions
        out: dict[str, Any] = {
            **self._summary(served),
            "width": width,
            "height": height,
            "mpp": slide.resolution.mpp if slide.resolution else None,
            "runs": {},
            "qc": [],
            "tissue": False,
            "tiles": False,
            "cells": False,
            "run": served.run,
            "colormaps": colormaps.names(),
            "cell_max_span_px": CELL_MAX_SPAN_PX,
        }
        if served.store is None:
            return out
        overlays = self.overlays(served.slide_id)
        out["tissue"] = bool(overlays.tissue)
        if overlays.tiling is not None:
            out["tiles"] = True
            out["tile_extent_px"] = overlays.tile_extent_px
            out["qc"] = sorted(overlays.qc)
            out["runs"] = {run: list(overlays.scores(run).columns) for run in overlays.runs()}
        out["cells"] = self.cells(served.slide_id) is not None
        return out

    def _tissue(self, slide_id: str) -> Response:
        overlays = self.overlays(slide_id)
        features = annotation_features(
            overlays.tissue,
            ids=IdSource(f"{slide_id}/tissue"),
            classification=Classification(name="Tissue", color=(120, 120, 120)),
            name="Tissue",
        )
        return _geojson(features)

    def _heatmap(self, slide_id: str, query: dict[str, list[str]], *, png: bool) -> Response:
        run, column = _text(query, "run"), _text(query, "column")
        cmap = _text(query, "cmap") or "viridis"
        if cmap not in colormaps:
            raise HTTPError(400, f"unknown colour map {cmap!r}")
        overlays = self.overlays(slide_id)
        if overlays.tiling is None:
            raise HTTPError(404, "this slide has no tiles")
        if run is not None and run not in overlays.runs():
            raise HTTPError(404, f"no run {run!r} for this slide")
        key = (slide_id, run, column, cmap)
        with self._lock:
            cached = self._rasters.get(key) if png else None
        if cached is not None:
            return cached
        tiles = tile_values(overlays, run=run, column=column)
        width, height = self.slide(slide_id).dimensions
        raster, scale = tile_raster(tiles, (width, height))
        if not png:
            stops = colorize(np.linspace(tiles.vmin, tiles.vmax, 9), tiles.vmin, tiles.vmax, cmap)
            return _json(
                {
                    "name": tiles.name,
                    "vmin": tiles.vmin,
                    "vmax": tiles.vmax,
                    "colors": ["#%02x%02x%02x" % tuple(c[:3]) for c in stops.tolist()],  # noqa: UP031
                    "raster_width": raster.shape[1],
                    "raster_height": raster.shape[0],
                    "scale": scale,
                }
            )
        buffer = io.BytesIO()
        Image.fromarray(colorize(raster, tiles.vmin, tiles.vmax, cmap)).save(buffer, format="PNG")
        response = Response(200, buffer.getvalue(), "image/png")
        with self._lock:
            self._rasters[key] = response
        return response

    def _at(self, slide_id: str, query: dict[str, list[str]]) -> Response:
        x, y = _number(query, "x"), _number(query, "y")
        run = _text(query, "run")
        overlays = self.overlays(slide_id)
        if overlays.tiling is None:
            return _json({"tile": None})
        if run is not None and run not in overlays.runs():
            raise HTTPError(404, f"no run {run!r} for this slide")
        return _json({"tile": overlays.tile_at(x, y, run)})

    def _cells_in(self, slide_id: str, query: dict[str, list[str]]) -> Response:
        raw = _text(query, "bbox")
        try:
            x0, y0, x1, y1 = (float(v) for v in (raw or "").split(","))
        except ValueError:
            raise HTTPError(400, "bbox must be x0,y0,x1,y1") from None
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
            raise HTTPError(400, "bbox must be finite with x0 <= x1 and y0 <= y1")
        table = self.cells(slide_id)
        if table is None:
            raise HTTPError(404, "this slide has no cells")
        if max(x1 - x0, y1 - y0) > CELL_MAX_SPAN_PX:
            return _geojson([], too_large=True, max_span_px=CELL_MAX_SPAN_PX)
        limit = int(_number(query, "limit", default=CELL_LIMIT))
        batch, truncated = table.query((x0, y0, x1, y1), limit=max(1, min(limit, CELL_LIMIT)))
        features = batch.features(
            ids=IdSource(f"{slide_id}/cells/{x0},{y0}"), colors=table.class_colors
        )
        return _geojson(features, truncated=truncated)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "sfc-view"

    def parse_request(self) -> bool:
        """Parse the request, then refuse it (403) unless it is addressed to the bound address.

        Checked here rather than per method so no verb (and no error page) is
        ever answered to a foreign ``Host``.
        """
        if not super().parse_request():
            return False
        hosts = self.headers.get_all("Host") or []
        addressed = len(hosts) == 1 and hosts[0].strip().lower() in self.server.hosts
        # An absolute-form target ("GET http://other/ HTTP/1.1") names its own host: refused too.
        if addressed and self.path.startswith("/"):
            return True
        log.info("refused a request for host %r from %s", hosts, self.address_string())
        body = f"forbidden: this viewer answers only requests to {self.server.url}\n"
        self.close_connection = True
        refusal = Response(403, body.encode("utf-8"), "text/plain; charset=utf-8")
        self._send(refusal, body=self.command != "HEAD")
        return False

    def _respond(self, *, body: bool) -> None:
        try:
            response = self.server.app.handle(self.path)
        except Exception:  # a bug must not take the server down: log it and answer 500
            log.exception("viewer request failed: %s", self.path)
            response = Response(500, b'{"error":"internal error"}')
        self._send(response, body=body)

    def _send(self, response: Response, *, body: bool) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store" if response.status != 200 else "max-age=300")
        self.end_headers()
        if body:
            try:
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client left before %s was sent", self.path)

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """``Host`` header values that address a server bound to loopback ``host`` at ``port``.

    The literal address and ``localhost``, each with the port (and bare when the
    port is 80, as browsers then omit it); an IPv6 address is bracketed.
    """
    literal = f"[{host}]" if ":" in host else host
    names = {literal.lower(), "localhost"}
    hosts = {f"{name}:{port}" for name in names}
    return frozenset(hosts | names if port == 80 else hosts)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, app: ViewerApp) -> None:
        self.app = app
        super().__init__(("127.0.0.1", port), _Handler)
        host, bound = self.server_address[:2]
        self.hosts = allowed_hosts(str(host), int(bound))
        self.url = f"http://{host}:{bound}/"


class ViewerServer:
    """A running viewer: serves ``target`` on 127.0.0.1 (a free port unless one is given).

    Parameters
    ----------
    target
        A slide file, a slide store, a project folder or ``runs/<run>``.
    port
        TCP port; 0 picks a free one.

    Examples
    --------
    >>> with ViewerServer("project") as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(self, target: str | os.PathLike[str], *, port: int = 0) -> None:
        self.app = ViewerApp(build_catalog(target))
        self._server = _Server(port, self.app)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Address of the viewer page."""
        return self._server.url

    def start(self) -> ViewerServer:
        """Serve from a background thread (returns at once)."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def close(self) -> None:
        """Stop serving and close the slides."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.app.close()

    def __enter__(self) -> ViewerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
