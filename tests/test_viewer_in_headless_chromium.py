"""The viewer page in a real browser: slide tiles render, layers toggle, hover shows measurements.

Drives Debian's ``chromium`` with Playwright (never a downloaded browser).
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from overlay_stores import make_store
from PIL import Image

from slideflow_core.viewer import ViewerServer

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium); .ci/run installs it",
        allow_module_level=True,
    )

WAIT_MS = 30_000


@pytest.fixture(scope="module")
def page(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("project")
    make_store(root, "CMU", grid=(8, 11), slide_path=cmu_svs, dimensions=(2220, 2967), cells=300)
    with ViewerServer(root) as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        page.wait_for_function("window.sfc && sfc.ready && sfc.heatmapReady", timeout=WAIT_MS)
        page.wait_for_function(
            "sfc.tilesLoaded > 0 && sfc.viewer.world.getItemAt(0).getFullyLoaded()", timeout=WAIT_MS
        )
        page.errors = errors
        yield page
        browser.close()


def canvas_pixels(page) -> np.ndarray:
    shot = page.locator("#viewer").screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)


def screen_point(page, x, y):
    """Page coordinates of the level-0 point ``(x, y)``."""
    return page.evaluate(
        """([x, y]) => {
            const point = new OpenSeadragon.Point(x, y);
            const p = sfc.state.slideItem.imageToViewerElementCoordinates(point);
            const r = sfc.viewer.container.getBoundingClientRect();
            return [p.x + r.left, p.y + r.top];
        }""",
        [x, y],
    )


def test_slide_canvas_renders_tissue_pixels(page):
    pixels = canvas_pixels(page)
    # H&E tissue is far from white and from the flat background: many saturated pixels.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 40).mean() > 0.05
    assert page.errors == []
    assert page.evaluate("sfc.viewer.world.getItemCount()") == 2  # slide + heatmap


def test_heatmap_layer_toggles_and_follows_the_opacity_slider(page):
    before = canvas_pixels(page)
    assert page.evaluate("sfc.state.heatmapItem.getOpacity()") == pytest.approx(0.6)
    page.click("#layer-heatmap")
    page.wait_for_function("sfc.state.heatmapItem.getOpacity() === 0", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    hidden = canvas_pixels(page)
    assert np.abs(before - hidden).mean() > 2  # the heatmap colours are gone
    page.click("#layer-heatmap")
    page.fill("#opacity", "100")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("sfc.state.heatmapItem.getOpacity()") == 1
    assert page.inner_text("#legend-title") == "attention"


def test_hovering_a_tile_shows_its_measurements(page):
    x, y = screen_point(page, 300, 100)  # tile 1 (blur NaN, attention scored)
    page.mouse.move(x, y)
    page.mouse.move(x + 1, y + 1)
    page.wait_for_selector("#popup:not([hidden])", timeout=WAIT_MS)
    page.wait_for_function(
        "document.querySelector('#popup h2').textContent.startsWith('tile 1 ')", timeout=WAIT_MS
    )
    text = page.inner_text("#popup")
    assert "attention" in text and "tissue_fraction" in text and "blur" not in text


def test_cells_load_for_the_viewport_and_their_layer_toggles(page):
    assert page.evaluate("sfc.state.cells.length") > 0
    page.click("#layer-cells")
    page.wait_for_function("sfc.state.cells.length === 0", timeout=WAIT_MS)
    page.click("#layer-cells")
    page.wait_for_function("sfc.state.cells.length > 0", timeout=WAIT_MS)
