"""The viewer's server: Deep Zoom tiles and overlay data, and every hostile request refused."""

from __future__ import annotations

import io
import json
import math
import socket
import urllib.error
import urllib.request

import pytest
from overlay_stores import make_store
from PIL import Image

from slideflow_core.viewer import ViewerServer
from slideflow_core.viewer.catalog import ViewerError, build_catalog

TIMEOUT = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("project")
    make_store(root, "CMU", grid=(8, 11), slide_path=cmu_svs, dimensions=(2220, 2967), cells=300)
    with ViewerServer(root) as running:
        yield running


def get(server, path, method="GET"):
    """Status, content type and body of one request (errors included)."""
    request = urllib.request.Request(server.url.rstrip("/") + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def raw_get(server, path):
    """Send ``path`` byte for byte (urllib would normalise it) and return the status code."""
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
        head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode())
        head = conn.recv(64).decode("latin-1")
    return int(head.split()[1])


def test_it_listens_on_loopback_at_a_free_port(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert int(server.url.rstrip("/").rsplit(":", 1)[1]) > 0


def test_page_and_bundled_openseadragon_are_served(server):
    status, kind, body = get(server, "/")
    assert status == 200 and kind.startswith("text/html")
    assert b"/static/vendor/openseadragon/openseadragon.min.js" in body
    status, kind, body = get(server, "/static/vendor/openseadragon/openseadragon.min.js")
    assert status == 200 and kind.startswith("text/javascript") and b"OpenSeadragon" in body[:500]
    status, _, body = get(server, "/static/vendor/openseadragon/images/zoomin_rest.png")
    assert status == 200 and body[:4] == b"\x89PNG"
    assert get(server, "/", method="HEAD")[0] == 200


def test_slide_details_list_layers_runs_and_columns(server):
    status, _, body = get(server, "/api/slides")
    assert status == 200 and json.loads(body) == [
        {"id": "CMU", "name": "CMU-1-Small-Region.svs", "store": True}
    ]
    details = json.loads(get(server, "/api/slides/CMU")[2])
    assert (details["width"], details["height"]) == (2220, 2967)
    assert details["tissue"] and details["tiles"] and details["cells"]
    assert details["runs"] == {"r1": ["attention"]}
    assert set(details["qc"]) == {"blur", "keep", "tissue_fraction"}


def test_deep_zoom_descriptor_and_tiles(server):
    status, kind, body = get(server, "/dzi/CMU.dzi")
    assert status == 200 and b'Width="2220"' in body and b'Height="2967"' in body
    top = math.ceil(math.log2(2967))
    status, kind, body = get(server, f"/dzi/CMU_files/{top}/0_0.jpeg")
    assert status == 200 and kind == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (256, 256)
    edge = get(server, f"/dzi/CMU_files/{top}/8_11.jpeg")[2]  # last column: 2220 - 8 * 256 wide
    assert Image.open(io.BytesIO(edge)).size == (2220 - 8 * 256, 2967 - 11 * 256)
    whole = get(server, "/dzi/CMU_files/8/0_0.jpeg")[2]  # 2967 / 2^4 ≈ 186 px high
    assert Image.open(io.BytesIO(whole)).size == (139, 186)
    assert (
        get(server, f"/dzi/CMU_files/{top}/0_0.jpeg")[2]
        == get(server, f"/dzi/CMU_files/{top}/0_0.jpeg")[2]
    )


@pytest.mark.parametrize(
    "path",
    [
        "/dzi/CMU_files/99/0_0.jpeg",  # level above the top
        "/dzi/CMU_files/12/9_0.jpeg",  # column past the edge
        "/dzi/CMU_files/12/0_12.jpeg",  # row past the edge
        "/dzi/CMU_files/-1/0_0.jpeg",
        "/dzi/CMU_files/12/0_0.png",
        "/dzi/CMU_files/12/a_b.jpeg",
        "/dzi/CMU_files/12/99999999999_0.jpeg",
        "/dzi/NOPE.dzi",
        "/dzi/NOPE_files/1/0_0.jpeg",
        "/api/slides/NOPE",
        "/api/slides/CMU/secrets",
        "/static/../server.py",
        "/static/viewer.js/../../server.py",
        "/nothing-here",
    ],
)
def test_bad_addresses_are_404(server, path):
    assert get(server, path)[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/%252e%252e/%252e%252e/etc/passwd",
        "/static/..%5c..%5cserver.py",
        "/static/%c0%ae%c0%ae/etc/passwd",
        "/static/vendor/openseadragon/%00.js",
        "/dzi/..%2f..%2fetc%2fpasswd.dzi",
        "/dzi/%2e%2e_files/1/0_0.jpeg",
        "/api/slides/..%2f..%2fetc%2fpasswd/tissue",
        "//etc/passwd",
        "/static//etc/passwd",
    ],
)
def test_path_traversal_is_refused_and_the_server_survives(server, path):
    assert raw_get(server, path) == 404
    assert get(server, "/api/slides")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/slides/CMU/cells?bbox=1,2,3",
        "/api/slides/CMU/cells?bbox=a,b,c,d",
        "/api/slides/CMU/cells?bbox=10,10,0,0",
        "/api/slides/CMU/cells?bbox=nan,0,1,1",
        "/api/slides/CMU/at?x=1",
        "/api/slides/CMU/at?x=inf&y=2",
        "/api/slides/CMU/heatmap?cmap=rainbow",
    ],
)
def test_bad_parameters_are_400(server, path):
    status, _, body = get(server, path)
    assert status == 400 and "error" in json.loads(body)


def test_tissue_cells_and_hover_lookups(server):
    tissue = json.loads(get(server, "/api/slides/CMU/tissue")[2])
    assert tissue["features"][0]["properties"]["objectType"] == "annotation"
    cells = json.loads(get(server, "/api/slides/CMU/cells?bbox=0,0,800,600")[2])
    assert cells["features"] and not cells["truncated"]
    for feature in cells["features"]:
        x0, y0, x1, y1 = _bounds(
            feature["nucleusGeometry"] if "nucleusGeometry" in feature else feature["geometry"]
        )
        assert x1 >= 0 and y1 >= 0 and x0 <= 800 and y0 <= 600
    capped = json.loads(get(server, "/api/slides/CMU/cells?bbox=0,0,2000,2000&limit=5")[2])
    assert len(capped["features"]) == 5 and capped["truncated"]
    wide = json.loads(get(server, "/api/slides/CMU/cells?bbox=0,0,100000,100000")[2])
    assert wide["too_large"] and wide["features"] == []
    hit = json.loads(get(server, "/api/slides/CMU/at?x=300&y=10&run=r1")[2])["tile"]
    assert hit["tile"] == 1 and hit["extent_px"] == 256
    assert set(hit["measurements"]) == {"tissue_fraction", "keep", "attention"}  # blur is NaN
    assert json.loads(get(server, "/api/slides/CMU/at?x=5000&y=5000")[2])["tile"] is None
    assert get(server, "/api/slides/CMU/at?x=1&y=1&run=nope")[0] == 404


def _bounds(geometry):
    coords = (
        geometry["coordinates"][0]
        if geometry["type"] == "Polygon"
        else geometry["coordinates"][0][0]
    )
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    return min(xs), min(ys), max(xs), max(ys)


def test_heatmap_legend_and_raster(server):
    legend = json.loads(get(server, "/api/slides/CMU/heatmap?run=r1")[2])
    assert legend["name"] == "attention" and (legend["vmin"], legend["vmax"]) == (0.0, 1.0)
    assert len(legend["colors"]) == 9 and legend["scale"] == pytest.approx(1 / 256)
    status, _, body = get(server, "/api/slides/CMU/heatmap.png?run=r1")
    image = Image.open(io.BytesIO(body))
    assert status == 200 and image.mode == "RGBA"
    assert image.size == (legend["raster_width"], legend["raster_height"]) == (9, 12)
    assert image.getpixel((0, 0))[3] == 255 and image.getpixel((2, 0))[3] == 0  # tile 2 unscored
    assert image.getpixel((8, 11))[3] == 0  # no tile there
    assert get(server, "/api/slides/CMU/heatmap?column=nope")[0] == 404


def test_a_bare_slide_file_is_viewable_without_overlays(cmu_svs, tmp_path):
    with ViewerServer(cmu_svs) as running:
        details = json.loads(get(running, "/api/slides/CMU-1-Small-Region")[2])
        assert not details["tiles"] and not details["tissue"]
        assert get(running, "/api/slides/CMU-1-Small-Region/tissue")[0] == 404
    with pytest.raises(ViewerError, match="nothing to view"):
        build_catalog(tmp_path / "missing")
    with pytest.raises(ViewerError, match="no slide store"):
        build_catalog(tmp_path)
