"""Physical resolution: microns per pixel, magnification, and pyramid level choice.

Units live in names: ``mpp`` is µm per pixel, ``*_px`` are pixel counts, and
coordinates passed between stages are level-0 pixels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slideflow_core.errors import ResolutionError
from slideflow_core.slides.ome import ome_pixel_size_um

#: Relative tolerance used when a pyramid level counts as "at" a requested mpp.
DEFAULT_TOLERANCE = 0.05

# Resolution tags written by generic TIFF writers when no calibration exists
# (72 dpi is the usual default; stored in inches or as 28.346 px/cm).
_PLACEHOLDER_DPI = (72.0, 96.0, 100.0, 150.0, 300.0, 600.0)
# No brightfield or fluorescence scanner works coarser than this.
_MAX_PLAUSIBLE_MPP = 100.0
_MIN_PLAUSIBLE_MPP = 0.01

_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_MAGNIFICATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*[xX]\s*$")


@dataclass(frozen=True)
class Resolution:
    """A slide's level-0 calibration and where it came from.

    Attributes
    ----------
    mpp_x, mpp_y
        Microns per pixel along x and y at level 0.
    source
        Human-readable origin ("openslide.mpp-x", "Aperio ImageDescription",
        "user override", ...), kept for provenance.
    """

    mpp_x: float
    mpp_y: float
    source: str

    @property
    def mpp(self) -> float:
        """Mean of the x and y calibration (they agree on every real scanner)."""
        return (self.mpp_x + self.mpp_y) / 2.0


def is_placeholder_mpp(mpp: float) -> bool:
    """True when ``mpp`` is a writer's default rather than a microscope calibration.

    Generic TIFF writers store 72 dpi (≈ 352.8 µm/px) and similar round screen or
    print densities; any value outside a plausible microscopy range is rejected too.
    """
    if not math.isfinite(mpp) or mpp <= _MIN_PLAUSIBLE_MPP or mpp >= _MAX_PLAUSIBLE_MPP:
        return True
    dpi = 25400.0 / mpp
    return any(abs(dpi - d) / d < 0.005 for d in _PLACEHOLDER_DPI)


def _as_float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def resolution_from_properties(properties: Mapping[str, str]) -> Resolution | None:
    """Find a trustworthy level-0 calibration in a slide's properties.

    Sources, in order: the backend's normalised ``openslide.mpp-x/y`` or
    ``tiffslide.mpp-x/y`` (which read vendor metadata, DICOM pixel spacing and
    TIFF resolution tags), the Aperio ``ImageDescription`` ``|MPP = …|`` field,
    then an OME-XML ``ImageDescription``'s ``PhysicalSizeX/Y`` (units converted).
    Placeholder values (see :func:`is_placeholder_mpp`) are treated as missing.

    Returns
    -------
    Resolution or None
        ``None`` when the slide carries no usable calibration.
    """
    for prefix in ("openslide", "tiffslide"):
        mx = _as_float(properties.get(f"{prefix}.mpp-x"))
        my = _as_float(properties.get(f"{prefix}.mpp-y")) or mx
        if mx is not None and my is not None:
            if is_placeholder_mpp(mx) or is_placeholder_mpp(my):
                break  # a writer's default resolution tag: look in the description
            return Resolution(mx, my, f"{prefix}.mpp-x/y")
    description = properties.get("tiff.ImageDescription") or ""
    match = _APERIO_MPP.search(description)
    if match:
        value = _as_float(match.group(1))
        if value is not None and not is_placeholder_mpp(value):
            return Resolution(value, value, "Aperio ImageDescription")
    ome = ome_pixel_size_um(description)
    if ome is not None and not any(is_placeholder_mpp(v) for v in ome):
        return Resolution(ome[0], ome[1], "OME-XML PhysicalSizeX")
    return None


def parse_magnification(value: str | float) -> float:
    """Convert a magnification (``"20x"``, ``"40X"``, ``20``) to µm per pixel.

    Uses the conventional ``mpp = 10 / magnification`` (20x ≈ 0.5 µm/px). Scanners
    differ by a few percent, so tile at the returned mpp with a tolerance.
    """
    if isinstance(value, str):
        match = _MAGNIFICATION.match(value)
        if not match:
            raise ValueError(f"cannot read magnification {value!r}; write it like '20x' or '40x'")
        power = float(match.group(1))
    else:
        power = float(value)
    if power <= 0:
        raise ValueError(f"magnification must be positive, got {value!r}")
    return 10.0 / power


def magnification_from_mpp(mpp: float) -> float:
    """The nominal objective power for a calibration (0.5 µm/px → 20.0)."""
    return 10.0 / mpp


@dataclass(frozen=True)
class LevelChoice:
    """How a read at a requested mpp is served from the pyramid.

    Attributes
    ----------
    level
        Pyramid level read from.
    level_mpp
        Calibration of that level (µm/px).
    target_mpp
        The requested calibration.
    scale
        Level pixels per output pixel (``target_mpp / level_mpp``, ≥ 1 - tolerance).
    needs_resize
        False when the level is within tolerance of the target, so pixels are
        returned exactly as stored; the actual mpp is then ``level_mpp``.
    """

    level: int
    level_mpp: float
    target_mpp: float
    scale: float
    needs_resize: bool

    @property
    def actual_mpp(self) -> float:
        """Calibration of the pixels actually returned."""
        return self.target_mpp if self.needs_resize else self.level_mpp

    def read_px(self, out_px: int) -> int:
        """Pixels to read at ``level`` to produce ``out_px`` output pixels."""
        return out_px if not self.needs_resize else max(1, round(out_px * self.scale))


def choose_level(
    level_mpps: Sequence[float],
    target_mpp: float,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    slide_name: str = "slide",
) -> LevelChoice:
    """Pick the pyramid level to serve ``target_mpp`` from.

    The coarsest level whose mpp is at most ``target_mpp * (1 + tolerance)`` is
    chosen, so data is only ever downsampled (or taken as is). A level within
    ``tolerance`` of the target is used without resizing.

    Raises
    ------
    ResolutionError
        If the target is finer than level 0 beyond the tolerance (that would
        need upsampling, which invents detail).
    """
    if target_mpp <= 0 or not math.isfinite(target_mpp):
        raise ResolutionError(f"requested mpp must be a positive number, got {target_mpp!r}")
    if not 0 <= tolerance < 1:
        raise ResolutionError(f"tolerance must be in [0, 1), got {tolerance!r}")
    # A hair of slack so a level exactly at the tolerance edge counts as inside.
    slack = tolerance * target_mpp + 1e-9 * target_mpp
    candidates = [(mpp, level) for level, mpp in enumerate(level_mpps) if mpp <= target_mpp + slack]
    if not candidates:
        finest = min(level_mpps)
        raise ResolutionError(
            f"{slide_name}: requested {target_mpp:g} µm/px but its finest level is "
            f"{finest:.4g} µm/px (tolerance {tolerance:.0%}); upsampling is refused",
            hint=f"request mpp >= {finest * (1 - tolerance):.4g} or raise the tolerance",
        )
    level_mpp, level = max(candidates)
    within = abs(level_mpp - target_mpp) <= slack
    return LevelChoice(
        level=level,
        level_mpp=level_mpp,
        target_mpp=target_mpp,
        scale=target_mpp / level_mpp,
        needs_resize=not within,
    )
