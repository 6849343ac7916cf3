"""The viewer answers only requests addressed to its own address, and no answer shows a path.

Real HTTP requests to a started server on 127.0.0.1 with forged ``Host``
headers (what a DNS-rebinding page makes the browser send), and error
bodies checked for every file-system path the server knows.
"""

from __future__ import annotations

import http.client
import json

import pytest
from overlay_stores import make_store

from slideflow_core.viewer import ViewerServer
from slideflow_core.viewer.server import allowed_hosts

TIMEOUT = 10


@pytest.fixture(scope="module")
def project(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("project")
    make_store(root, "CMU", grid=(8, 11), slide_path=cmu_svs, dimensions=(2220, 2967))
    make_store(root, "GONE", slide_path=root / "slides" / "GONE.svs")  # slide file moved away
    return root


@pytest.fixture(scope="module")
def server(project):
    with ViewerServer(project) as running:
        yield running


def request(server, path, *, hosts, method="GET"):
    """Status, content type and body of one request carrying exactly the ``hosts`` headers."""
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for host in hosts:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def port_of(server):
    return int(server.url.rstrip("/").rsplit(":", 1)[1])


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LocalHost"])
def test_the_bound_address_is_answered(server, name):
    status, _, body = request(server, "/api/slides", hosts=[f"{name}:{port_of(server)}"])
    assert status == 200 and {s["id"] for s in json.loads(body)} == {"CMU", "GONE"}


@pytest.mark.parametrize(
    "hosts",
    [
        ["evil.example"],
        ["evil.example:{port}"],
        ["127.0.0.1.evil.example:{port}"],
        ["localhost.evil.example:{port}"],
        ["127.0.0.1"],  # no port: not the address the page was loaded from
        ["localhost"],
        ["127.0.0.1:{other}"],
        ["0.0.0.0:{port}"],
        ["[::1]:{port}"],  # not bound there
        ["127.0.0.1:{port}@evil.example"],
        [""],
        [],  # no Host at all
        ["127.0.0.1:{port}", "evil.example"],  # two Host headers
    ],
)
@pytest.mark.parametrize("path", ["/", "/api/slides", "/api/slides/CMU", "/dzi/CMU.dzi", "/nope"])
def test_any_other_host_is_refused_with_a_short_plain_403(server, hosts, path):
    port = port_of(server)
    forged = [h.format(port=port, other=port + 1) for h in hosts]
    status, kind, body = request(server, path, hosts=forged)
    assert status == 403 and kind.startswith("text/plain")
    assert body.startswith(b"forbidden") and len(body) < 120
    assert b"CMU" not in body and b"/" + b"tmp" not in body


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "OPTIONS"])
def test_every_method_is_refused_for_a_foreign_host(server, method):
    assert request(server, "/api/slides", hosts=["evil.example"], method=method)[0] == 403


def test_an_absolute_form_target_is_refused_even_with_our_host(server):
    host = f"127.0.0.1:{port_of(server)}"
    assert request(server, "http://evil.example/api/slides", hosts=[host])[0] == 403
    assert request(server, f"http://{host}/api/slides", hosts=[host])[0] == 403
    assert request(server, "/api/slides", hosts=[host])[0] == 200  # still serving


def test_allowed_hosts_name_the_bound_address_only():
    assert allowed_hosts("127.0.0.1", 8123) == {"127.0.0.1:8123", "localhost:8123"}
    assert allowed_hosts("::1", 8123) == {"[::1]:8123", "localhost:8123"}
    assert allowed_hosts("127.0.0.1", 80) == {
        "127.0.0.1:80",
        "localhost:80",
        "127.0.0.1",
        "localhost",
    }


@pytest.mark.parametrize(
    ("path", "status", "names"),
    [
        ("/dzi/NOPE.dzi", 404, "no such slide"),
        ("/api/slides/NOPE/tissue", 404, "no such slide"),
        ("/dzi/GONE.dzi", 404, "slide 'GONE'"),  # the slide file is missing
        ("/api/slides/GONE", 404, "slide 'GONE'"),
        ("/api/slides/CMU/heatmap?column=nope", 404, "slide 'CMU'"),  # unknown column
        ("/api/slides/CMU/heatmap.png?run=r1&column=nope", 404, "slide 'CMU'"),
        ("/api/slides/CMU/at?x=1&y=1&run=nope", 404, "no run 'nope'"),
        ("/api/slides/CMU/cells?bbox=0,0,1,1", 404, "no cells"),
        ("/api/slides/CMU/cells?bbox=a", 400, "bbox"),
        ("/dzi/CMU_files/99/0_0.jpeg", 404, "level 99"),
    ],
)
def test_error_bodies_name_slides_by_id_and_hold_no_path(
    server, project, cmu_svs, path, status, names
):
    got, kind, body = request(server, path, hosts=[f"localhost:{port_of(server)}"])
    text = body.decode("utf-8")
    assert got == status and kind == "application/json"
    message = json.loads(text)["error"]
    assert names in message
    for secret in (str(project), str(cmu_svs.parent), "stores", ".zarr", ".svs", "/tmp"):
        assert secret not in text, (secret, text)


def test_paths_outside_the_catalog_are_hidden_too(server):
    app = server.app
    assert app.public("cannot read /srv/data/x.svs (errno 2)") == "cannot read <path> (errno 2)"
    assert app.public("'C:\\slides\\a.svs' is locked") == "'<path>' is locked"
    assert app.public("tile 1/2 of 3 outside 0..12") == "tile 1/2 of 3 outside 0..12"
    store = app.catalog["CMU"].store
    assert app.public(f"{store}: attention/r1 is broken") == (
        "store of slide 'CMU': attention/r1 is broken"
    )
    assert str(store) not in app.public(f"{store}/coords/zarr.json is broken")
