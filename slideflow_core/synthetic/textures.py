"""Precomputed periodic textures for glass, eosin stroma and haematoxylin nuclei.

Each texture is periodic (filtered noise synthesised in the Fourier domain wraps around), so a
tile samples it at ``(x mod period, y mod period)`` and neighbouring tiles join seamlessly
without any per-pixel noise generation at render time. Colours follow Beer-Lambert: stain
concentrations times optical-density vectors, then ``255 * exp(-OD)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Optical density per unit stain in R, G, B; eosin is tuned towards the pink seen on scans.
_HAEMATOXYLIN_OD = np.array([0.65, 0.70, 0.29], dtype=np.float32)
_EOSIN_OD = np.array([0.05, 1.00, 0.45], dtype=np.float32)
_GLASS_RGB = np.array([243.0, 243.0, 246.0])
# The tissue textures repeat every this many pixels. Any feature much larger than a tenth of
# the period would show as a regular lattice at low magnification, so the textures hold only
# fine detail; large-scale variety comes from the (aperiodic) nucleus density instead.
_TISSUE_PERIOD_PX = 1024
# Feature sizes in µm, converted with the slide's mpp so that magnification is physical.
_STROMA_GAPS_UM = 6.0
_FIBRE_WIDTH_UM = 0.7
_FIBRE_ELONGATION = 8.0
_GRAIN_UM = 0.6
_CHROMATIN_UM = 0.5
_CHROMATIN_CLUMP_UM = 1.5
# About one nucleus across, so that neighbouring nuclei differ in darkness.
_NUCLEAR_TONE_UM = 4.0


@dataclass(frozen=True, eq=False)
class TextureBank:
    """Periodic RGB textures (``stroma``, ``nuclei``, ``glass``), each padded so that any crop
    up to ``max_crop_px`` is one slice."""

    images: dict[str, Image.Image]
    periods_px: dict[str, int]
    max_crop_px: int

    def crop(self, name: str, x: int, y: int, width: int, height: int) -> Image.Image:
        """The ``width`` x ``height`` window of texture ``name`` at level-0 top-left (x, y)."""
        if width > self.max_crop_px or height > self.max_crop_px:
            raise ValueError(f"crop {width}x{height} exceeds the bank padding {self.max_crop_px}")
        period = self.periods_px[name]
        x, y = x % period, y % period
        return self.images[name].crop((x, y, x + width, y + height))


# Cached so that repeated slides with one seed, and forked render workers, reuse the bank.
@functools.lru_cache(maxsize=4)
def build_texture_bank(
    seed: int, mpp: float, glass_period_px: int, max_crop_px: int
) -> TextureBank:
    """Synthesise the textures for a slide's seed and resolution (µm per pixel)."""
    rng = np.random.default_rng([seed, 1])
    px = 1.0 / mpp
    period = _TISSUE_PERIOD_PX
    gaps = periodic_field(rng, period, _STROMA_GAPS_UM * px)
    grain = periodic_field(rng, period, _GRAIN_UM * px)
    fibres = _fibres(rng, period, _FIBRE_WIDTH_UM * px)
    # Loose connective tissue: pale patches where the gap field is high.
    loose = np.clip((gaps - 0.8) / 0.8, 0.0, 1.0)
    eosin = (0.45 + 0.12 * fibres + 0.04 * grain) * (1.0 - 0.7 * loose)
    haem = 0.06 + 0.02 * grain
    stroma = _stain_rgb(haem, eosin)

    chromatin = periodic_field(rng, period, _CHROMATIN_UM * px)
    clumps = periodic_field(rng, period, _CHROMATIN_CLUMP_UM * px)
    tone = periodic_field(rng, period, _NUCLEAR_TONE_UM * px)
    haem = 1.2 + 0.2 * chromatin + 0.15 * clumps + 0.25 * tone
    nuclei = _stain_rgb(haem, np.full_like(haem, 0.25))

    # Fine speckle only: coarser glass shading would repeat visibly at the glass period.
    speckle = periodic_field(rng, glass_period_px, 0.8)
    glass = _GLASS_RGB - 0.8 * speckle[..., None]
    textures = {
        "stroma": (stroma, period),
        "nuclei": (nuclei, period),
        "glass": (glass, glass_period_px),
    }
    return TextureBank(
        images={name: _padded_image(rgb, max_crop_px) for name, (rgb, _) in textures.items()},
        periods_px={name: p for name, (_, p) in textures.items()},
        max_crop_px=max_crop_px,
    )


def periodic_field(
    rng: np.random.Generator,
    size_px: int,
    sigma_px: float,
    *,
    elongation: float = 1.0,
    angle_rad: float = 0.0,
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise that wraps around at ``size_px``.

    ``elongation`` > 1 stretches the filter along ``angle_rad``, giving fibre-like streaks.
    White noise has a white complex-Gaussian spectrum, so the spectrum is drawn directly
    (float32) instead of transforming spatial noise.
    """
    sigma_px = max(sigma_px, 0.5)
    fy = np.fft.fftfreq(size_px).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size_px).astype(np.float32)[None, :]
    along = fx * math.cos(angle_rad) + fy * math.sin(angle_rad)
    across = -fx * math.sin(angle_rad) + fy * math.cos(angle_rad)
    gain = np.exp(-2 * math.pi**2 * sigma_px**2 * ((along * elongation) ** 2 + across**2))
    shape = gain.shape
    spectrum = rng.standard_normal(shape, dtype=np.float32) * gain
    spectrum = spectrum + 1j * (rng.standard_normal(shape, dtype=np.float32) * gain)
    field = np.fft.irfft2(spectrum, s=(size_px, size_px))
    return (field - field.mean()) / (field.std() + 1e-12)


def _fibres(rng: np.random.Generator, size_px: int, width_px: float) -> np.ndarray:
    """Collagen-like streaks in two orientations, mixed by a slowly varying weight."""
    angle = rng.uniform(0, math.pi)
    first = periodic_field(rng, size_px, width_px, elongation=_FIBRE_ELONGATION, angle_rad=angle)
    second = periodic_field(
        rng, size_px, width_px, elongation=_FIBRE_ELONGATION, angle_rad=angle + math.pi / 3
    )
    weight = 1.0 / (1.0 + np.exp(-3.0 * periodic_field(rng, size_px, 8 * width_px)))
    return weight * first + (1.0 - weight) * second


def _stain_rgb(haematoxylin: np.ndarray, eosin: np.ndarray) -> np.ndarray:
    """Beer-Lambert RGB of stain concentration maps."""
    density = np.clip(haematoxylin, 0, None).astype(np.float32)[..., None] * _HAEMATOXYLIN_OD
    density += np.clip(eosin, 0, None).astype(np.float32)[..., None] * _EOSIN_OD
    return 255.0 * np.exp(-density)


def _padded_image(rgb: np.ndarray, pad_px: int) -> Image.Image:
    """Wrap-pad a periodic texture so that crops never need to wrap."""
    pixels = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return Image.fromarray(np.pad(pixels, ((0, pad_px), (0, pad_px), (0, 0)), mode="wrap"))
