"""Aperio SVS conventions: ImageDescription strings and the associated images.

OpenSlide's ``aperio`` driver recognises a TIFF whose first ImageDescription starts with
"Aperio", reads ``key = value`` pairs after the first ``|`` (``MPP`` -> ``openslide.mpp-x``,
``AppMag`` -> ``openslide.objective-power``), takes tiled directories as levels, the second
directory as the thumbnail, and names later stripped directories by the first word of their
description's second line ("label", "macro").
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from slideflow_core.synthetic.spec import SyntheticSlideSpec

_HEADER = "Aperio Image Library v12.0.0 "
THUMBNAIL_MAX_PX = 1024
# Aperio macro photos show the whole 75 x 25 mm slide, label end on the left.
_MACRO_SIZE_PX = (1280, 427)
_MACRO_PX_PER_MM = _MACRO_SIZE_PX[0] / 75.0
_LABEL_SIZE_PX = (387, 463)


def format_mpp(mpp: float) -> str:
    """Aperio writes four decimals; use more only when needed to round-trip ``mpp`` exactly."""
    short = f"{mpp:.4f}"
    return short if float(short) == mpp else repr(float(mpp))


def _fields(spec: SyntheticSlideSpec) -> str:
    magnification = round(10.0 / spec.mpp)
    return (
        f"|AppMag = {magnification}|MPP = {format_mpp(spec.mpp)}"
        f"|Filename = synthetic|Title = synthetic H&E seed {spec.seed}"
    )


def _base(spec: SyntheticSlideSpec) -> str:
    w, h, t = spec.width_px, spec.height_px, spec.tile_px
    return f"{w}x{h} [0,0 {w}x{h}] ({t}x{t})"


def level_description(spec: SyntheticSlideSpec, size_px: tuple[int, int] | None = None) -> str:
    """Description of level 0 (``size_px`` None) or of a reduced level of that size."""
    reduced = "" if size_px is None else f" -> {size_px[0]}x{size_px[1]}"
    codec = f" JPEG/RGB Q={spec.jpeg_quality}"
    return f"{_HEADER}\r\n{_base(spec)}{reduced}{codec}{_fields(spec)}"


def thumbnail_description(spec: SyntheticSlideSpec, size_px: tuple[int, int]) -> str:
    """Description of the stripped thumbnail (the second directory)."""
    w, h = spec.width_px, spec.height_px
    return f"{_HEADER}\r\n{w}x{h} -> {size_px[0]}x{size_px[1]} - {_fields(spec)}"


def associated_description(name: str, size_px: tuple[int, int]) -> str:
    """Description of the label or macro image.

    A bare ``\\n``: OpenSlide splits on both CR and LF, so ``\\r\\n`` would make the name empty.
    """
    return f"{_HEADER}\n{name} {size_px[0]}x{size_px[1]}"


def make_thumbnail(source: np.ndarray) -> np.ndarray:
    """Downscale a whole level to at most ``THUMBNAIL_MAX_PX`` on its longer side."""
    image = Image.fromarray(source)
    image.thumbnail((THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX), Image.Resampling.LANCZOS)
    return np.asarray(image)


def make_label(spec: SyntheticSlideSpec) -> np.ndarray:
    """A white paper label with the slide's identity and a made-up barcode."""
    label = Image.new("RGB", _LABEL_SIZE_PX, (246, 246, 240))
    draw = ImageDraw.Draw(label)
    lines = [
        "SYNTHETIC H&E",
        f"seed {spec.seed}",
        f"{spec.width_px} x {spec.height_px} px",
        f"{format_mpp(spec.mpp)} um/px",
    ]
    for i, line in enumerate(lines):
        draw.text((24, 24 + 28 * i), line, fill=(20, 20, 20), font_size=20)
    bars = np.random.default_rng([spec.seed, 2]).integers(1, 5, 48)
    x = 24
    for i, bar in enumerate(bars.tolist()):
        if i % 2 == 0:
            draw.rectangle((x, 300, x + bar * 2 - 1, 430), fill=(0, 0, 0))
        x += bar * 2
    return np.asarray(label)


def make_macro(spec: SyntheticSlideSpec, thumbnail: np.ndarray, label: np.ndarray) -> np.ndarray:
    """An overview photo: the label at the left, the scanned area at true physical scale."""
    macro = Image.new("RGB", _MACRO_SIZE_PX, (214, 216, 220))
    width, height = _MACRO_SIZE_PX
    label_w = round(25 * _MACRO_PX_PER_MM)
    macro.paste(Image.fromarray(label).resize((label_w, height)), (0, 0))
    # The scanned area, shrunk to fit the glass part of the photo if it is physically larger.
    scale = _MACRO_PX_PER_MM * spec.mpp / 1000.0
    area_w = max(1, round(spec.width_px * scale))
    area_h = max(1, round(spec.height_px * scale))
    shrink = min(1.0, (width - label_w - 8) / area_w, (height - 8) / area_h)
    area = (max(1, round(area_w * shrink)), max(1, round(area_h * shrink)))
    scan = Image.fromarray(thumbnail).resize(area, Image.Resampling.LANCZOS)
    left = label_w + (width - label_w - area[0]) // 2
    macro.paste(scan, (left, (height - area[1]) // 2))
    return np.asarray(macro)
