"""Per-tile quality control: how much tissue, glass and pen ink a tile holds, and how sharp it is.

Every tile of every slide goes through :func:`tile_qc`, so it works on a whole batch at once:
the batch is stacked into one tall image and each step (colour conversion, comparisons,
Laplacian) is a single OpenCV/NumPy call over all its pixels.

The pixel classes come from colour rules on HSV (OpenCV's 8-bit scale: hue 0-179 in 2° steps,
saturation and value 0-255):

- *background*: bright and unsaturated, i.e. glass;
- *pen*: marker ink. H&E only produces hues from purple to pink (haematoxylin about 230-290°,
  eosin about 300-350°), so saturated green-to-cyan hues are ink; saturated *bright* blue is
  ink while dark blue-purple is haematoxylin; black ink is dark and nearly grey, whereas even
  the darkest nuclei keep a strong purple saturation;
- *tissue*: everything else.

On the real CMU-1 H&E these rules mark about 0.5 % of tissue pixels as ink (colour fringes
at tissue edges) and do catch its teal margin dye. Ink over tissue is darker and duller than
on glass, so only part of it is caught (25-90 % of the pixels, black ink least), which is
still far above any sensible ``max_pen_fraction``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

QC_COLUMNS: tuple[str, ...] = ("tissue_fraction", "background_fraction", "blur", "pen_fraction")

# Glass: scanners render it at 220-250 grey with only a faint colour cast.
_BACKGROUND_MIN_VALUE = 200
_BACKGROUND_MAX_SATURATION = 20
# Green to cyan ink (70-190°); no H&E stain has these hues.
_GREEN_HUE = (35, 95)
_GREEN_MIN_SATURATION = 50
# Blue ink (190-250°) must also be bright: dark pixels of these hues are haematoxylin...
_BLUE_HUE = (95, 126)
_BLUE_MIN_SATURATION = 110
_BLUE_MIN_VALUE = 90
# ...except below 230°, which even the darkest haematoxylin does not reach but ink over
# tissue (or two crossing strokes) does.
_DEEP_BLUE_HUE = (95, 115)
_DEEP_BLUE_MIN_SATURATION = 120
# Black ink is dark and grey; over tissue it picks up some colour, so the darkest pixels are
# allowed a little more saturation than merely dark ones. The darkest nuclei of real H&E
# stay above ~110 saturation.
_BLACK_MAX_VALUE = 90
_BLACK_MAX_SATURATION = 77
_DARKEST_MAX_VALUE = 60
_DARKEST_MAX_SATURATION = 100


#: Pixels :func:`pen_mask` classifies at once.
_CHUNK_PX = 1 << 18


def _hsv_channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue, saturation and value (uint8, OpenCV scale) of any ``(..., 3)`` RGB array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    # One wide image: OpenCV's per-row overhead makes a one-pixel-wide column slow.
    width = rgb.shape[-2] if rgb.ndim > 2 else rgb.shape[0]
    pixels = rgb.reshape(-1, width, 3)
    # Into arrays of ours: planes cv2.split allocates itself cost 10x more on large images.
    planes = np.empty((3, *pixels.shape[:2]), np.uint8)
    hue, saturation, value = cv2.split(cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV), list(planes))
    shape = rgb.shape[:-1]
    return hue.reshape(shape), saturation.reshape(shape), value.reshape(shape)


def _background(saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    return (value >= _BACKGROUND_MIN_VALUE) & (saturation < _BACKGROUND_MAX_SATURATION)


def _hue_between(hue: np.ndarray, low: int, high: int) -> np.ndarray:
    """``low <= hue < high`` in two passes: uint8 subtraction wraps values below ``low``."""
    return np.subtract(hue, low, dtype=np.uint8) < high - low


def _pen(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    green = _hue_between(hue, *_GREEN_HUE) & (saturation > _GREEN_MIN_SATURATION)
    blue = (
        _hue_between(hue, *_BLUE_HUE)
        & (saturation > _BLUE_MIN_SATURATION)
        & (value > _BLUE_MIN_VALUE)
    ) | (_hue_between(hue, *_DEEP_BLUE_HUE) & (saturation > _DEEP_BLUE_MIN_SATURATION))
    black = ((value < _BLACK_MAX_VALUE) & (saturation < _BLACK_MAX_SATURATION)) | (
        (value < _DARKEST_MAX_VALUE) & (saturation < _DARKEST_MAX_SATURATION)
    )
    return green | blue | black


def background_mask(rgb: np.ndarray) -> np.ndarray:
    """Which pixels of an ``(..., 3)`` uint8 RGB array are glass (bright and unsaturated)."""
    _, saturation, value = _hsv_channels(rgb)
    return _background(saturation, value)


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Which pixels of an ``(..., 3)`` uint8 RGB array are marker ink (green, blue or black)."""
    pixels = np.asarray(rgb).reshape(-1, 3)
    ink = np.empty(len(pixels), bool)
    # A slice at a time: the rules' dozen temporaries stay in the CPU's cache (2x faster on
    # a slide's overview).
    for start in range(0, len(pixels), _CHUNK_PX):
        ink[start : start + _CHUNK_PX] = _pen(*_hsv_channels(pixels[start : start + _CHUNK_PX]))
    return ink.reshape(np.shape(rgb)[:-1])


def _laplacian_variance(tiles: np.ndarray) -> np.ndarray:
    """Variance of the grey Laplacian inside each tile of a ``(B, H, W, 3)`` batch."""
    batch, height, width = tiles.shape[:3]
    stacked = np.ascontiguousarray(tiles).reshape(batch * height, width, 3)
    grey = cv2.cvtColor(stacked, cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(grey, cv2.CV_16S).reshape(batch, height, width)
    # The outer ring of each tile sees its neighbour in the stack (or the border padding).
    inner = laplacian[:, 1:-1, 1:-1]
    # Per-tile meanStdDev reads the strided view in place, faster than a float copy.
    std = np.array([cv2.meanStdDev(tile)[1][0, 0] for tile in inner], dtype=np.float32)
    return std**2


def tile_qc(tiles: np.ndarray) -> dict[str, np.ndarray]:
    """Quality metrics of a batch of RGB tiles.

    Parameters
    ----------
    tiles
        ``(B, H, W, 3)`` uint8 tiles (``H`` and ``W`` at least 3).

    Returns
    -------
    dict
        One ``(B,)`` float32 array per name in :data:`QC_COLUMNS`:

        ``tissue_fraction``
            Share of pixels that are neither glass nor ink.
        ``background_fraction``
            Share of glass pixels (bright and unsaturated).
        ``blur``
            Variance of the Laplacian of the grey tile (higher is sharper). It depends on the
            tile's resolution and content, so thresholds on it hold for one ``mpp`` only.
        ``pen_fraction``
            Share of marker-ink pixels (green, blue or black ink).
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise ValueError(
            f"tiles must be a (B, H, W, 3) uint8 array, got {tiles.dtype} {tiles.shape}"
        )
    batch, height, width = tiles.shape[:3]
    if batch == 0:
        return {name: np.zeros(0, dtype=np.float32) for name in QC_COLUMNS}
    if height < 3 or width < 3:
        raise ValueError(f"tiles must be at least 3x3 pixels, got {height}x{width}")
    hue, saturation, value = _hsv_channels(tiles)
    background = _background(saturation, value).reshape(batch, -1)
    # Glass rules exclude ink, so the two classes never overlap.
    pen = _pen(hue, saturation, value).reshape(batch, -1)
    n_pixels = height * width
    background_fraction = np.count_nonzero(background, axis=1) / n_pixels
    pen_fraction = np.count_nonzero(pen, axis=1) / n_pixels
    return {
        "tissue_fraction": (1.0 - background_fraction - pen_fraction).astype(np.float32),
        "background_fraction": background_fraction.astype(np.float32),
        "blur": _laplacian_variance(tiles),
        "pen_fraction": pen_fraction.astype(np.float32),
    }


def reduce_tiles(tiles: np.ndarray, scale: int) -> np.ndarray:
    """``(B, H, W, 3)`` tiles shrunk ``scale`` times by area averaging (H, W multiples of it)."""
    if scale == 1:
        return tiles
    batch, height, width = tiles.shape[:3]
    # Stacked into one tall image: integer-factor blocks never straddle two tiles.
    stacked = np.ascontiguousarray(tiles).reshape(batch * height, width, 3)
    small = cv2.resize(
        stacked, (width // scale, batch * height // scale), interpolation=cv2.INTER_AREA
    )
    return small.reshape(batch, height // scale, width // scale, 3)


@dataclass(frozen=True, kw_only=True)
class QCThresholds:
    """Which tiles :func:`qc_keep` keeps.

    Parameters
    ----------
    min_tissue_fraction
        Least share of tissue pixels. A quarter: below it a tile is mostly glass, and its
        embedding describes the slide edge rather than the tissue.
    max_pen_fraction
        Largest share of ink pixels. Five percent tolerates a few stray pixels (dust, dye
        specks) but drops tiles an ink stroke crosses, whose colours no stain model explains.
    min_blur
        Least Laplacian variance, or ``None`` (default) to keep blurry tiles. Off by default
        because the value depends on the tile's ``mpp``, scanner and stain, and on the
        reduction QC runs at (``TilingConfig.qc_scale``); calibrate it on a few slides of the
        cohort (on full-resolution 0.25-0.5 µm/px H&E, sharp tissue scores in the hundreds and
        out-of-focus tissue in the tens).
    """

    min_tissue_fraction: float = 0.25
    max_pen_fraction: float = 0.05
    min_blur: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_tissue_fraction", "max_pen_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
        if self.min_blur is not None and not (
            isinstance(self.min_blur, (int, float)) and math.isfinite(self.min_blur)
        ):
            raise ValueError(f"min_blur must be a finite number or None, got {self.min_blur!r}")

    def to_dict(self) -> dict[str, Any]:
        """The thresholds as JSON-ready values (for store attributes and provenance)."""
        return asdict(self)


def qc_keep(metrics: Mapping[str, np.ndarray], thresholds: QCThresholds) -> np.ndarray:
    """Which tiles pass ``thresholds``, given the metrics of :func:`tile_qc`.

    Raises
    ------
    KeyError
        If a metric the thresholds need is missing.
    """
    needed = ["tissue_fraction", "pen_fraction"]
    if thresholds.min_blur is not None:
        needed.append("blur")
    missing = [name for name in needed if name not in metrics]
    if missing:
        raise KeyError(f"QC metrics lack {', '.join(missing)}; have {', '.join(metrics)}")
    keep = np.asarray(metrics["tissue_fraction"]) >= thresholds.min_tissue_fraction
    keep &= np.asarray(metrics["pen_fraction"]) <= thresholds.max_pen_fraction
    if thresholds.min_blur is not None:
        keep &= np.asarray(metrics["blur"]) >= thresholds.min_blur
    return keep
