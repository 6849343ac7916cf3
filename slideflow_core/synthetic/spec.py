"""What a synthetic slide should look like: size, calibration, content, encoding."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# JPEG 4:2:0 works on 16x16 blocks and TIFF needs tile sides that are multiples of 16.
_TILE_MULTIPLE_PX = 16
# Outside this range the slides API would take the calibration for a writer placeholder.
_MPP_RANGE = (0.05, 20.0)
# (min, max) fields, which JSON turns into lists.
_RANGE_FIELDS = ("nucleus_diameter_um", "tumour_radius_um", "tumour_nucleus_diameter_um")


@dataclass(frozen=True, kw_only=True)
class SyntheticSlideSpec:
    """Parameters of a synthetic H&E-like whole-slide image.

    Parameters
    ----------
    width_px, height_px
        Level-0 size in pixels.
    mpp
        Level-0 resolution in µm per pixel (also written as ``MPP`` in the Aperio header).
    tile_px
        Side of the square JPEG tiles of every pyramid level; a multiple of 16.
    jpeg_quality
        JPEG quality (1-100) of the pyramid tiles.
    seed
        Seed of every random choice; the same spec always gives the same slide.
    n_tissue_regions
        Number of separate tissue sections (smooth irregular polygons).
    tissue_fraction
        Approximate fraction of the slide area the tissue regions cover.
    hole_probability
        Chance that a tissue region has holes (lumina, tears).
    nuclei_per_mm2
        Mean density of nuclei inside tissue.
    nucleus_diameter_um
        Range of nucleus equivalent diameters, drawn uniformly.
    n_pen_marks
        Number of marker-pen strokes drawn over tissue and glass.
    pen_width_um
        Width of a pen stroke; ``None`` picks min(400 µm, 2 % of the shorter slide side).
    n_blur_regions
        Number of out-of-focus patches, each centred in tissue.
    blur_sigma_um
        Standard deviation of the Gaussian blur inside those patches.
    level_downsample
        Downsample between consecutive pyramid levels; must divide ``tile_px``.
    associated_images
        Also write Aperio ``label`` and ``macro`` images.
    n_tumour_regions
        Number of tumour foci, each a smooth blob centred in tissue (clipped to it). Inside
        them nuclei are denser, larger and more elongated, as in a carcinoma; the truth
        keeps the foci as :attr:`SyntheticTruth.tumour`.
    tumour_radius_um
        Range of a focus's radius, drawn uniformly.
    tumour_nuclei_per_mm2
        Mean nucleus density inside tumour foci.
    tumour_nucleus_diameter_um
        Range of tumour nucleus equivalent diameters, drawn uniformly.
    """

    width_px: int = 8192
    height_px: int = 6144
    mpp: float = 0.25
    tile_px: int = 256
    jpeg_quality: int = 85
    seed: int = 0
    n_tissue_regions: int = 3
    tissue_fraction: float = 0.35
    hole_probability: float = 0.5
    nuclei_per_mm2: float = 3000.0
    nucleus_diameter_um: tuple[float, float] = (6.0, 10.0)
    n_pen_marks: int = 1
    pen_width_um: float | None = None
    n_blur_regions: int = 1
    blur_sigma_um: float = 2.0
    level_downsample: int = 4
    associated_images: bool = True
    n_tumour_regions: int = 0
    tumour_radius_um: tuple[float, float] = (150.0, 400.0)
    tumour_nuclei_per_mm2: float = 7000.0
    tumour_nucleus_diameter_um: tuple[float, float] = (9.0, 14.0)

    def __post_init__(self) -> None:
        _check_int("tile_px", self.tile_px, minimum=_TILE_MULTIPLE_PX)
        if self.tile_px % _TILE_MULTIPLE_PX:
            raise ValueError(f"tile_px must be a multiple of 16, got {self.tile_px}")
        _check_int("width_px", self.width_px, minimum=self.tile_px)
        _check_int("height_px", self.height_px, minimum=self.tile_px)
        _check_float("mpp", self.mpp, low=_MPP_RANGE[0], high=_MPP_RANGE[1])
        _check_int("jpeg_quality", self.jpeg_quality, minimum=1, maximum=100)
        _check_int("seed", self.seed, minimum=0)
        _check_int("n_tissue_regions", self.n_tissue_regions, minimum=0)
        _check_float("tissue_fraction", self.tissue_fraction, low=0.01, high=0.9)
        _check_float("hole_probability", self.hole_probability, low=0.0, high=1.0)
        _check_float("nuclei_per_mm2", self.nuclei_per_mm2, low=0.0, high=50_000.0)
        _check_range("nucleus_diameter_um", self.nucleus_diameter_um, low=0.5, high=100.0)
        _check_int("n_pen_marks", self.n_pen_marks, minimum=0)
        if self.pen_width_um is not None:
            _check_float("pen_width_um", self.pen_width_um, low=1.0, high=10_000.0)
        _check_int("n_blur_regions", self.n_blur_regions, minimum=0)
        _check_float("blur_sigma_um", self.blur_sigma_um, low=0.1, high=50.0)
        _check_int("level_downsample", self.level_downsample, minimum=2)
        if self.tile_px % self.level_downsample:
            raise ValueError(
                f"level_downsample ({self.level_downsample}) must divide tile_px ({self.tile_px})"
            )
        if not isinstance(self.associated_images, bool):
            raise ValueError(f"associated_images must be a bool, got {self.associated_images!r}")
        _check_int("n_tumour_regions", self.n_tumour_regions, minimum=0)
        _check_range("tumour_radius_um", self.tumour_radius_um, low=1.0, high=100_000.0)
        _check_float("tumour_nuclei_per_mm2", self.tumour_nuclei_per_mm2, low=0.0, high=50_000.0)
        _check_range(
            "tumour_nucleus_diameter_um", self.tumour_nucleus_diameter_um, low=0.5, high=100.0
        )

    @property
    def pen_stroke_px(self) -> float:
        """Width of a pen stroke in level-0 pixels."""
        if self.pen_width_um is not None:
            return self.pen_width_um / self.mpp
        return min(400.0 / self.mpp, 0.02 * min(self.width_px, self.height_px))

    def with_overrides(self, **overrides: Any) -> SyntheticSlideSpec:
        """A copy with some fields replaced (validated like a new spec)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"unknown SyntheticSlideSpec field(s): {', '.join(unknown)}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyntheticSlideSpec:
        """Inverse of :meth:`to_dict` (JSON turns the diameter tuple into a list)."""
        values = dict(values)
        for name in _RANGE_FIELDS:
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")


def _check_float(name: str, value: object, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_range(name: str, value: object, *, low: float, high: float) -> None:
    if not (isinstance(value, tuple) and len(value) == 2):
        raise ValueError(f"{name} must be a (min, max) tuple, got {value!r}")
    first, last = value
    _check_float(f"{name}[0]", first, low=low, high=high)
    _check_float(f"{name}[1]", last, low=low, high=high)
    if first > last:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value}")
