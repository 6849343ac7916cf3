"""H&E augmentation of training crops: geometry, scale, stain, blur and JPEG.

What varies between labs and scanners, drawn per crop from one seeded generator:

- orientation: quarter turns and flips (tissue has no up);
- scale: the crop is read over ``side × s`` pixels and resized to ``side``, with ``s``
  drawn so the crop's µm/px varies by ``scale_jitter`` around the working µm/px (as
  between scanners calling themselves 40x: 0.23-0.27 µm/px);
- stain: haematoxylin, eosin and residual concentrations (colour deconvolution) each
  scaled and shifted (Tellez et al. 2018, "HED jitter");
- focus: a Gaussian blur of random sigma;
- compression: a JPEG round trip at random quality (slides are stored as JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from embedders.dense.deconvolution import STAIN_VECTORS

_UNMIX = np.linalg.inv(STAIN_VECTORS).astype(np.float32)
_MIX = STAIN_VECTORS.astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """How much each augmentation varies a crop (0 turns one off).

    Parameters
    ----------
    scale_jitter
        Largest relative change of µm/px (0.15: from 0.85 to 1.15 times the working one).
    stain_scale, stain_shift
        Largest relative scale and absolute shift (optical density) of each stain.
    blur_probability, blur_sigma_px
        How often a crop is blurred, and the largest Gaussian sigma.
    jpeg_probability, jpeg_quality
        How often a crop goes through JPEG, and the lowest quality drawn (up to 95).
    """

    scale_jitter: float = 0.15
    stain_scale: float = 0.08
    stain_shift: float = 0.03
    blur_probability: float = 0.2
    blur_sigma_px: float = 1.2
    jpeg_probability: float = 0.3
    jpeg_quality: int = 60

    def __post_init__(self) -> None:
        checks = {
            "scale_jitter": 0 <= self.scale_jitter < 1,
            "stain_scale": 0 <= self.stain_scale < 1,
            "stain_shift": self.stain_shift >= 0,
            "blur_probability": 0 <= self.blur_probability <= 1,
            "blur_sigma_px": self.blur_sigma_px >= 0,
            "jpeg_probability": 0 <= self.jpeg_probability <= 1,
            "jpeg_quality": 5 <= self.jpeg_quality <= 95,
        }
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid AugmentConfig: {', '.join(bad)}")


def stain_jitter(
    image: np.ndarray, rng: np.random.Generator, *, scale: float, shift: float
) -> np.ndarray:
    """uint8 RGB with each stain concentration scaled by ``1 ± scale``, shifted by ``± shift``."""
    od = -np.log10(np.maximum(image.astype(np.float32), 1.0) / 255.0)
    stains = od.reshape(-1, 3) @ _UNMIX
    stains = stains * rng.uniform(1 - scale, 1 + scale, 3).astype(np.float32)
    stains = stains + rng.uniform(-shift, shift, 3).astype(np.float32)
    od = np.maximum(stains @ _MIX, 0.0).reshape(image.shape)
    return np.clip(255.0 * np.power(10.0, -od), 0, 255).round().astype(np.uint8)


def augment_crop(
    image: np.ndarray,
    labels: tuple[np.ndarray, ...],
    rng: np.random.Generator,
    *,
    side: int,
    config: AugmentConfig,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """A random ``side``-px crop of ``image`` and its label maps, augmented.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 at the working µm/px, at least ``side`` on each side.
    labels
        Maps of the image's shape (instances, types), cropped and turned with it and
        resized by nearest neighbour.
    rng
        The generator every draw comes from.
    side
        Crop side in pixels.
    config
        What varies and by how much.
    """
    height, width = image.shape[:2]
    s = float(np.exp(rng.uniform(np.log(1 - config.scale_jitter), np.log(1 + config.scale_jitter))))
    read = min(height, width, max(8, round(side * s)))
    y, x = int(rng.integers(0, height - read + 1)), int(rng.integers(0, width - read + 1))
    window = (slice(y, y + read), slice(x, x + read))
    crop, maps = image[window], [m[window] for m in labels]
    if read != side:
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
        maps = [cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST) for m in maps]
    turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    crop, maps = np.rot90(crop, turns), [np.rot90(m, turns) for m in maps]
    if flip:
        crop, maps = crop[:, ::-1], [m[:, ::-1] for m in maps]
    crop = np.ascontiguousarray(crop)
    if config.stain_scale or config.stain_shift:
        crop = stain_jitter(crop, rng, scale=config.stain_scale, shift=config.stain_shift)
    if rng.random() < config.blur_probability:
        crop = cv2.GaussianBlur(
            crop, (0, 0), float(rng.uniform(0.3, max(0.3, config.blur_sigma_px)))
        )
    if rng.random() < config.jpeg_probability:
        quality = int(rng.integers(config.jpeg_quality, 96))
        _, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
        crop = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return crop, tuple(np.ascontiguousarray(m) for m in maps)
