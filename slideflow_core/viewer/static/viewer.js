// slideflow-core viewer: a Deep Zoom slide with tissue, tile-heatmap and cell layers.
// Coordinates from the server are level-0 pixels of the slide's full frame.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const state = {
    slide: null, info: null, slideItem: null, heatmapItem: null, legend: null,
    tissue: [], cells: [], highlight: null, pinned: false, hoverTimer: null, hoverSeq: 0,
  };
  // Exposed for tests and for poking around in the browser console.
  const sfc = (window.sfc = { state, tilesLoaded: 0, ready: false, heatmapReady: false });

  const viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/vendor/openseadragon/images/",
    drawer: "canvas",
    showNavigator: true,
    imageSmoothingEnabled: false,
    maxZoomPixelRatio: 4,
    animationTime: 0.3,
    gestureSettingsMouse: { clickToZoom: false },
  });
  sfc.viewer = viewer;
  viewer.addHandler("tile-loaded", () => { sfc.tilesLoaded += 1; });

  const overlay = document.createElement("canvas");
  overlay.id = "overlay";
  viewer.canvas.appendChild(overlay);

  async function getJSON(url) {
    const response = await fetch(url);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }

  function setStatus(text) { $("status").textContent = text; }

  // -- drawing the vector layers --------------------------------------------------
  function transform() {
    const item = state.slideItem;
    const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 1000));
    return { sx: (b.x - a.x) / 1000, sy: (b.y - a.y) / 1000, tx: a.x, ty: a.y };
  }

  function tracePolygon(ctx, rings) {
    for (const ring of rings) {
      ring.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
    }
  }

  function traceGeometry(ctx, geometry) {
    if (!geometry) return;
    if (geometry.type === "Polygon") tracePolygon(ctx, geometry.coordinates);
    else if (geometry.type === "MultiPolygon") geometry.coordinates.forEach((p) => tracePolygon(ctx, p));
  }

  function classColor(feature, alpha) {
    const c = (feature.properties.classification || {}).color || [0, 160, 255];
    return `rgba(${c[0]},${c[1]},${c[2]},${alpha})`;
  }

  function redraw() {
    const width = viewer.container.clientWidth;
    const height = viewer.container.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    overlay.width = Math.round(width * dpr);
    overlay.height = Math.round(height * dpr);
    overlay.style.width = `${width}px`;
    overlay.style.height = `${height}px`;
    const ctx = overlay.getContext("2d");
    if (!state.slideItem) return;
    const t = transform();
    ctx.setTransform(t.sx * dpr, 0, 0, t.sy * dpr, t.tx * dpr, t.ty * dpr);
    const px = 1 / t.sx;
    if ($("layer-tissue").checked && state.tissue.length) {
      ctx.strokeStyle = "rgba(20, 140, 60, 0.9)";
      ctx.lineWidth = 2 * px;
      ctx.beginPath();
      state.tissue.forEach((f) => traceGeometry(ctx, f.geometry));
      ctx.stroke();
    }
    if ($("layer-cells").checked) {
      for (const f of state.cells) {
        if (f.nucleusGeometry) {
          ctx.fillStyle = classColor(f, 0.35);
          ctx.beginPath();
          traceGeometry(ctx, f.nucleusGeometry);
          ctx.fill("evenodd");
        }
        ctx.strokeStyle = classColor(f, 0.9);
        ctx.lineWidth = 1.2 * px;
        ctx.beginPath();
        traceGeometry(ctx, f.geometry);
        ctx.stroke();
      }
    }
    if (state.highlight) {
      ctx.strokeStyle = "rgba(255, 200, 0, 1)";
      ctx.lineWidth = 3 * px;
      ctx.beginPath();
      traceGeometry(ctx, state.highlight);
      ctx.stroke();
    }
  }
  viewer.addHandler("update-viewport", redraw);
  viewer.addHandler("resize", redraw);
  viewer.addHandler("animation-finish", () => loadCells());

  // -- slides and layers -----------------------------------------------------------
  async function openSlide(id) {
    Object.assign(state, { slide: id, slideItem: null, heatmapItem: null, tissue: [], cells: [],
                           highlight: null, pinned: false });
    sfc.ready = false;
    sfc.heatmapReady = false;
    hidePopup();
    state.info = await getJSON(`/api/slides/${enc(id)}`);
    const info = state.info;
    const mpp = info.mpp ? `${info.mpp.toFixed(3)} µm/px` : "no calibration";
    $("info").textContent = `${info.width} × ${info.height} px, ${mpp}`;
    fillRuns();
    viewer.open({ tileSource: `/dzi/${enc(id)}.dzi` });
  }

  viewer.addHandler("open", async () => {
    state.slideItem = viewer.world.getItemAt(0);
    const info = state.info;
    try {
      if (info.tissue) state.tissue = (await getJSON(`/api/slides/${enc(state.slide)}/tissue`)).features;
      await loadHeatmap();
    } catch (err) {
      setStatus(`Overlay failed: ${err.message}`);
    }
    redraw();
    await loadCells();
    sfc.ready = true;
  });

  function option(select, value, label) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = label;
    select.appendChild(el);
  }

  function fillRuns() {
    const info = state.info;
    const runs = Object.keys(info.runs || {});
    $("run").innerHTML = "";
    option($("run"), "", "(QC values only)");
    runs.forEach((r) => option($("run"), r, r));
    $("run").value = info.run && runs.includes(info.run) ? info.run : runs[0] || "";
    $("cmap").innerHTML = "";
    (info.colormaps || ["viridis"]).forEach((c) => option($("cmap"), c, c));
    fillColumns();
    $("heatmap-controls").hidden = !info.tiles;
  }

  function fillColumns() {
    const info = state.info;
    const run = $("run").value;
    const columns = [...(run ? info.runs[run] : []), ...(info.qc || [])];
    $("column").innerHTML = "";
    columns.forEach((c) => option($("column"), c, c));
  }

  function heatmapQuery() {
    const q = new URLSearchParams();
    if ($("run").value) q.set("run", $("run").value);
    if ($("column").value) q.set("column", $("column").value);
    q.set("cmap", $("cmap").value || "viridis");
    return q.toString();
  }

  function heatmapOpacity() {
    return $("layer-heatmap").checked ? Number($("opacity").value) / 100 : 0;
  }

  async function loadHeatmap() {
    if (state.heatmapItem) viewer.world.removeItem(state.heatmapItem);
    state.heatmapItem = null;
    sfc.heatmapReady = false;
    if (!state.info.tiles) return;
    const query = heatmapQuery();
    const legend = await getJSON(`/api/slides/${enc(state.slide)}/heatmap?${query}`);
    state.legend = legend;
    $("legend-title").textContent = legend.name;
    $("legend-bar").style.background = `linear-gradient(to right, ${legend.colors.join(", ")})`;
    $("legend-min").textContent = legend.vmin.toPrecision(3);
    $("legend-max").textContent = legend.vmax.toPrecision(3);
    const widthPx = legend.raster_width / legend.scale;
    await new Promise((resolve, reject) => {
      viewer.addTiledImage({
        tileSource: { type: "image", url: `/api/slides/${enc(state.slide)}/heatmap.png?${query}`,
                      buildPyramid: false },
        x: 0, y: 0, width: widthPx / state.info.width, opacity: heatmapOpacity(),
        success: (event) => { state.heatmapItem = event.item; sfc.heatmapReady = true; resolve(); },
        error: (event) => reject(new Error(event.message || "heatmap image failed")),
      });
    });
  }

  async function loadCells() {
    const info = state.info;
    if (!state.slideItem || !info || !info.cells || !$("layer-cells").checked) {
      state.cells = [];
      redraw();
      return;
    }
    const r = state.slideItem.viewportToImageRectangle(viewer.viewport.getBounds(true));
    if (Math.max(r.width, r.height) > info.cell_max_span_px) {
      state.cells = [];
      setStatus("Zoom in to see cells.");
      redraw();
      return;
    }
    const bbox = [r.x, r.y, r.x + r.width, r.y + r.height].map(Math.round).join(",");
    const data = await getJSON(`/api/slides/${enc(state.slide)}/cells?bbox=${bbox}`);
    state.cells = data.features;
    state.cells.forEach((f) => { f.bbox = bounds(f.geometry); });
    setStatus(`${state.cells.length} cells in view${data.truncated ? " (first ones only)" : ""}.`);
    redraw();
  }

  // -- hover and click ---------------------------------------------------------------
  function bounds(geometry) {
    const b = [Infinity, Infinity, -Infinity, -Infinity];
    const rings = geometry.type === "Polygon" ? geometry.coordinates : geometry.coordinates.flat();
    for (const ring of rings) {
      for (const [x, y] of ring) {
        b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y);
        b[2] = Math.max(b[2], x); b[3] = Math.max(b[3], y);
      }
    }
    return b;
  }

  function inRings(x, y, rings) {
    let inside = false;
    for (const ring of rings) {
      for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        const [xi, yi] = ring[i];
        const [xj, yj] = ring[j];
        if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
      }
    }
    return inside;
  }

  function contains(geometry, x, y) {
    if (geometry.type === "Polygon") return inRings(x, y, geometry.coordinates);
    return geometry.coordinates.some((p) => inRings(x, y, p));
  }

  function cellAt(x, y) {
    if (!$("layer-cells").checked) return null;
    for (let i = state.cells.length - 1; i >= 0; i--) {
      const f = state.cells[i];
      if (x >= f.bbox[0] && x <= f.bbox[2] && y >= f.bbox[1] && y <= f.bbox[3] && contains(f.geometry, x, y)) {
        return f;
      }
    }
    return null;
  }

  function showPopup(title, measurements, screen) {
    const popup = $("popup");
    popup.innerHTML = "";
    const h = document.createElement("h2");
    h.textContent = title;
    popup.appendChild(h);
    const table = document.createElement("table");
    for (const [name, value] of Object.entries(measurements)) {
      const row = table.insertRow();
      row.insertCell().textContent = name;
      const cell = row.insertCell();
      cell.className = "value";
      cell.textContent = Number.isInteger(value) ? String(value) : Number(value).toPrecision(4);
    }
    popup.appendChild(table);
    popup.style.left = `${screen.x + 16}px`;
    popup.style.top = `${screen.y + 16}px`;
    popup.hidden = false;
  }

  function hidePopup() {
    $("popup").hidden = true;
    $("popup").classList.remove("pinned");
    state.highlight = null;
  }

  async function hover(x, y, screen) {
    const cell = cellAt(x, y);
    if (cell) {
      const p = cell.properties;
      const name = (p.classification || {}).name || "unclassified";
      showPopup(`${p.objectType}: ${name}`, p.measurements || {}, screen);
      state.highlight = cell.geometry;
      redraw();
      return;
    }
    if (!state.info || !state.info.tiles) return;
    const seq = ++state.hoverSeq;
    const q = new URLSearchParams({ x: x.toFixed(1), y: y.toFixed(1) });
    if ($("run").value) q.set("run", $("run").value);
    const data = await getJSON(`/api/slides/${enc(state.slide)}/at?${q}`);
    if (seq !== state.hoverSeq || state.pinned) return;
    const tile = data.tile;
    if (!tile) {
      hidePopup();
      redraw();
      return;
    }
    showPopup(`tile ${tile.tile} at (${tile.x}, ${tile.y})`, tile.measurements, screen);
    const e = tile.extent_px;
    state.highlight = { type: "Polygon", coordinates: [[[tile.x, tile.y], [tile.x + e, tile.y],
      [tile.x + e, tile.y + e], [tile.x, tile.y + e], [tile.x, tile.y]]] };
    redraw();
  }

  function pointerImage(event) {
    const rect = viewer.container.getBoundingClientRect();
    const screen = new OpenSeadragon.Point(event.clientX - rect.left, event.clientY - rect.top);
    return { image: state.slideItem.viewerElementToImageCoordinates(screen),
             client: { x: event.clientX, y: event.clientY } };
  }

  viewer.container.addEventListener("pointermove", (event) => {
    if (!state.slideItem || state.pinned) return;
    const { image, client } = pointerImage(event);
    clearTimeout(state.hoverTimer);
    state.hoverTimer = setTimeout(() => {
      hover(image.x, image.y, client).catch((err) => setStatus(err.message));
    }, 40);
  }, true);

  viewer.container.addEventListener("pointerleave", () => {
    if (!state.pinned) { clearTimeout(state.hoverTimer); hidePopup(); redraw(); }
  });

  viewer.addHandler("canvas-click", (event) => {
    if (!event.quick) return;
    state.pinned = !state.pinned && !$("popup").hidden;
    $("popup").classList.toggle("pinned", state.pinned);
  });

  // -- controls ------------------------------------------------------------------------
  $("layer-tissue").addEventListener("change", redraw);
  $("layer-cells").addEventListener("change", () => loadCells());
  $("layer-heatmap").addEventListener("change", () => {
    if (state.heatmapItem) state.heatmapItem.setOpacity(heatmapOpacity());
  });
  $("opacity").addEventListener("input", () => {
    if (state.heatmapItem) state.heatmapItem.setOpacity(heatmapOpacity());
  });
  $("run").addEventListener("change", () => { fillColumns(); loadHeatmap().catch((e) => setStatus(e.message)); });
  $("column").addEventListener("change", () => loadHeatmap().catch((e) => setStatus(e.message)));
  $("cmap").addEventListener("change", () => loadHeatmap().catch((e) => setStatus(e.message)));
  $("slide").addEventListener("change", () => openSlide($("slide").value));

  getJSON("/api/slides").then((slides) => {
    slides.forEach((s) => option($("slide"), s.id, s.name === s.id ? s.id : `${s.id} (${s.name})`));
    const wanted = new URLSearchParams(window.location.search).get("slide");
    const first = slides.find((s) => s.id === wanted) || slides[0];
    if (first) {
      $("slide").value = first.id;
      openSlide(first.id).catch((err) => setStatus(err.message));
    } else {
      setStatus("No slide to show.");
    }
  }).catch((err) => setStatus(err.message));
})();
