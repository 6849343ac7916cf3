"""A local web viewer for slides and their overlays, and tile heatmaps as PNG.

``sfc view SLIDE_OR_STORE_OR_PROJECT`` (or :class:`ViewerServer`) serves the
slide as Deep Zoom tiles read on the fly, with toggleable tissue, tile-heatmap
and cell layers, in a page built on the bundled OpenSeadragon (no network
access needed). :func:`write_heatmap` draws a run's tile scores over the
slide thumbnail with a colour bar.
"""

from __future__ import annotations

from slideflow_core.viewer.catalog import ServedSlide, ViewerError, build_catalog
from slideflow_core.viewer.dzi import DeepZoom
from slideflow_core.viewer.heatmap import (
    HeatmapError,
    colorize,
    colormaps,
    render_heatmap,
    tile_values,
    write_heatmap,
)
from slideflow_core.viewer.server import ViewerApp, ViewerServer

#: Version of the bundled OpenSeadragon (static/vendor/openseadragon, from the npm registry).
OPENSEADRAGON_VERSION = "6.1.1"

__all__ = [
    "OPENSEADRAGON_VERSION",
    "DeepZoom",
    "HeatmapError",
    "ServedSlide",
    "ViewerApp",
    "ViewerError",
    "ViewerServer",
    "build_catalog",
    "colorize",
    "colormaps",
    "render_heatmap",
    "tile_values",
    "write_heatmap",
]
