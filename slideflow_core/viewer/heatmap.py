"""Heatmaps of per-tile values (attention, class probabilities, QC) with numpy and PIL only.

Tiles are painted at the output scale (overlapping tiles average), coloured
through a perceptual colour map, blended over the slide thumbnail and framed
with a colour bar. The same painter renders the viewer's heatmap layer, one
raster pixel per tile stride, drawn without smoothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.overlays import StoreOverlays
from slideflow_core.registry import Registry

colormaps: Registry[tuple[tuple[int, int, int], ...]] = Registry("colour map")
colormaps.register("viridis", description="perceptually uniform, colour-blind safe (default)")(
    (
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    )
)
colormaps.register("magma", description="perceptually uniform, dark to light")(
    (
        (0, 0, 4),
        (29, 17, 71),
        (81, 18, 124),
        (131, 38, 129),
        (183, 55, 121),
        (231, 82, 99),
        (252, 137, 97),
        (254, 196, 136),
        (252, 253, 191),
    )
)
colormaps.register("coolwarm", description="diverging, for signed values")(
    (
        (59, 76, 192),
        (98, 130, 234),
        (141, 176, 254),
        (185, 208, 249),
        (221, 220, 220),
        (245, 196, 172),
        (244, 152, 122),
        (221, 95, 75),
        (180, 4, 38),
    )
)

_MAX_RASTER_PX = 4096


class HeatmapError(SlideflowError):
    """A heatmap cannot be drawn (no values, unknown column)."""


def colorize(
    values: np.ndarray, vmin: float, vmax: float, cmap: str = "viridis", *, alpha: int = 255
) -> np.ndarray:
    """RGBA ``uint8`` colours of ``values`` (any shape); NaN becomes fully transparent."""
    stops = np.asarray(colormaps.get(cmap), dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((values - vmin) / span, 0.0, 1.0) * (len(stops) - 1)
    t = np.nan_to_num(t, nan=0.0)
    low = np.minimum(t.astype(np.int64), len(stops) - 2)
    frac = (t - low)[..., None]
    rgb = stops[low] * (1 - frac) + stops[low + 1] * frac
    out = np.empty((*values.shape, 4), dtype=np.uint8)
    out[..., :3] = np.round(rgb).astype(np.uint8)
    out[..., 3] = np.where(np.isfinite(values), alpha, 0)
    return out


def paint_tiles(
    coords: np.ndarray,
    extent_px: float,
    values: np.ndarray,
    *,
    scale: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Per-pixel mean of the values of the tiles covering it; NaN where none does.

    Parameters
    ----------
    coords
        ``(n, 2)`` level-0 top-left of each tile.
    extent_px
        Tile side in level-0 px.
    values
        ``(n,)`` values; NaN tiles are skipped.
    scale
        Output pixels per level-0 pixel.
    shape
        Output ``(height, width)``.
    """
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.int32)
    height, width = shape
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    x0 = np.floor(coords[:, 0] * scale).astype(np.int64)
    y0 = np.floor(coords[:, 1] * scale).astype(np.int64)
    x1 = np.maximum(x0 + 1, np.ceil((coords[:, 0] + extent_px) * scale).astype(np.int64))
    y1 = np.maximum(y0 + 1, np.ceil((coords[:, 1] + extent_px) * scale).astype(np.int64))
    for a, b, c, d, v in zip(
        np.clip(x0[finite], 0, width).tolist(),
        np.clip(y0[finite], 0, height).tolist(),
        np.clip(x1[finite], 0, width).tolist(),
        np.clip(y1[finite], 0, height).tolist(),
        values[finite].tolist(),
        strict=True,
    ):
        total[b:d, a:c] += v
        count[b:d, a:c] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


@dataclass(frozen=True)
class TileValues:
    """One column of per-tile values of a store, ready to draw.

    Attributes
    ----------
    name
        Measurement name (``attention``, ``probability: tumour``, ``blur``…).
    coords
        ``(n, 2)`` level-0 tile corners.
    extent_px
        Tile side in level-0 px.
    values
        ``(n,)`` float32, NaN where a tile has no value.
    vmin, vmax
        Colour range (finite min and max by default).
    """

    name: str
    coords: np.ndarray
    extent_px: float
    values: np.ndarray
    vmin: float
    vmax: float


def tile_values(
    overlays: StoreOverlays,
    *,
    run: str | None = None,
    column: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> TileValues:
    """Pick one per-tile column of a store: a run's score (first by default) or a QC value.

    Raises
    ------
    HeatmapError
        If the column does not exist or has no finite value.
    """
    columns = dict(overlays.qc)
    default = "tissue_fraction"
    if run is not None:
        scores = overlays.scores(run)
        columns.update(scores.measurements(slice(None)))
        default = scores.columns[0]
    name = column or default
    if name not in columns:
        raise HeatmapError(
            f"{overlays.path}: no per-tile column {name!r}",
            hint=f"choose one of: {', '.join(sorted(columns))}",
        )
    values = np.asarray(columns[name], np.float32)
    finite = values[np.isfinite(values)]
    if not len(finite):
        raise HeatmapError(f"{overlays.path}: column {name!r} has no finite value to draw")
    low = float(finite.min()) if vmin is None else float(vmin)
    high = float(finite.max()) if vmax is None else float(vmax)
    return TileValues(name, overlays.coords, overlays.tile_extent_px, values, low, high)


def tile_raster(tiles: TileValues, dimensions: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The heatmap at one pixel per tile stride (capped at 4096 px a side) and its scale.

    Returns the ``(h, w)`` float raster and output pixels per level-0 pixel.
    """
    xs = np.unique(tiles.coords[:, 0]) if len(tiles.coords) else np.zeros(1)
    steps = np.diff(xs)
    stride = float(steps[steps > 0].min()) if (steps > 0).any() else tiles.extent_px
    stride = min(stride, tiles.extent_px)
    width, height = dimensions
    scale = min(1.0 / stride, _MAX_RASTER_PX / max(width, height))
    shape = (max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale)))
    return paint_tiles(tiles.coords, tiles.extent_px, tiles.values, scale=scale, shape=shape), scale


def _colour_bar(tiles: TileValues, height: int, cmap: str) -> Image.Image:
    font = ImageFont.load_default()
    bar_w, pad, text_w = 18, 10, 90
    panel = Image.new("RGB", (bar_w + text_w + 2 * pad, height), "white")
    ramp = np.linspace(tiles.vmax, tiles.vmin, max(2, height - 2 * pad), dtype=np.float32)
    colours = colorize(np.repeat(ramp[:, None], bar_w, axis=1), tiles.vmin, tiles.vmax, cmap)
    panel.paste(Image.fromarray(colours[..., :3]), (pad, pad))
    draw = ImageDraw.Draw(panel)
    draw.rectangle((pad, pad, pad + bar_w - 1, height - pad - 1), outline="black")
    for frac in (0.0, 0.5, 1.0):
        value = tiles.vmax - frac * (tiles.vmax - tiles.vmin)
        y = pad + frac * (height - 2 * pad - 1)
        draw.line((pad + bar_w, y, pad + bar_w + 4, y), fill="black")
        draw.text((pad + bar_w + 7, y - 5), f"{value:.3g}", fill="black", font=font)
    return panel


def render_heatmap(
    tiles: TileValues,
    background: np.ndarray,
    dimensions: tuple[int, int],
    *,
    cmap: str = "viridis",
    alpha: float = 0.6,
    title: str | None = None,
) -> Image.Image:
    """The tile values blended over ``background`` (a thumbnail), with a colour bar and title.

    Parameters
    ----------
    tiles
        Values to draw.
    background
        RGB thumbnail of the whole slide (any size with the slide's aspect ratio).
    dimensions
        Level-0 ``(width, height)`` of the slide.
    cmap
        Colour map name (``viridis``, ``magma``, ``coolwarm``).
    alpha
        Opacity of the heatmap over the thumbnail, 0–1.
    title
        Text above the image (default: the value's name).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0-1, got {alpha}")
    height, width = background.shape[:2]
    scale = width / dimensions[0]
    painted = paint_tiles(
        tiles.coords, tiles.extent_px, tiles.values, scale=scale, shape=(height, width)
    )
    rgba = colorize(painted, tiles.vmin, tiles.vmax, cmap, alpha=round(alpha * 255))
    image = Image.fromarray(background[..., :3]).convert("RGBA")
    image.alpha_composite(Image.fromarray(rgba))
    bar = _colour_bar(tiles, height, cmap)
    title_h = 18
    out = Image.new("RGB", (width + bar.width, height + title_h), "white")
    out.paste(image.convert("RGB"), (0, title_h))
    out.paste(bar, (width, title_h))
    text = title or tiles.name
    ImageDraw.Draw(out).text((4, 3), text, fill="black", font=ImageFont.load_default())
    return out


def write_heatmap(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    run: str | None = None,
    column: str | None = None,
    max_px: int = 1024,
    cmap: str = "viridis",
    alpha: float = 0.6,
) -> Path:
    """Write a store's tile heatmap over the slide thumbnail as a PNG with a colour bar.

    The thumbnail is read from the source slide recorded in the store; when the
    slide is not reachable the heatmap is drawn over white.

    Raises
    ------
    HeatmapError
        If the column is missing or empty.
    """
    from slideflow_core.slides import open_slide

    overlays = StoreOverlays(store)
    tiles = tile_values(overlays, run=run, column=column)
    slide = overlays.slide
    width, height = (int(v) for v in slide["dimensions"])
    try:
        with open_slide(slide["path"], mpp=slide.get("mpp_override")) as handle:
            background = handle.thumbnail(max_px)
    except SlideflowError:
        scale = min(1.0, max_px / max(width, height))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        background = np.full((*size, 3), 255, np.uint8)
    title = f"{overlays.slide_id} - {run + ': ' if run else ''}{tiles.name}"
    image = render_heatmap(tiles, background, (width, height), cmap=cmap, alpha=alpha, title=title)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
