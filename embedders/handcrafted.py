"""A weight-free embedder of colour, texture and nucleus-density statistics.

Fast on the CPU and deterministic, it is the offline default (``make demo``) and a
baseline for foundation models. Features are computed for a whole batch at once:
NumPy reductions over ``(N, S, S)`` planes, and OpenCV filters over the batch stacked
as the channels of one image. Four views of a tile:

* **stain**: optical density ``OD = -ln((I + 1) / 256)`` unmixed into haematoxylin,
  eosin and residual (DAB) channels with the Ruifrok-Johnston H&E-DAB matrix;
* **colour**: RGB, saturation and grey-level statistics and histograms;
* **texture**: Sobel gradient magnitude and Laplacian at two scales, and mean absolute
  differences at offsets of 1-8 px (a GLCM-contrast analogue) of grey and H;
* **nuclei**: fractions of haematoxylin-rich pixels and the density and strength of
  haematoxylin blobs (local maxima of the smoothed H channel) at three scales.

Values are brought to order one with fixed constants (fractions, square roots of
histogram frequencies and densities), so a feature means the same in every batch.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np
import torch

from embedders.base import Embedder, check_tiles, resize_square

# Ruifrok & Johnston (2001) stain vectors (rows: haematoxylin, eosin, DAB) in OD space.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)
_OD_LUT = (-np.log((np.arange(256) + 1.0) / 256.0)).astype(np.float32)
_LUMA = (0.299, 0.587, 0.114)
_TISSUE_OD = 0.25  # summed OD above which a pixel is stained rather than glass
_H_LEVELS = (0.4, 0.7, 1.0)  # haematoxylin: weakly, clearly, strongly stained
# Blob scales as (pyramid level, sigma there): sigmas of 2, 3 and 4 full-resolution px,
# nuclei of ~5-12 px across (0.5 µm/px), the scales that tracked annotated nucleus counts
# best on MoNuSeg crops.
_BLOB_SCALES = ((0, 2.0), (1, 1.5), (1, 2.0))
_BLOB_CONTRAST = 0.15  # H above the surrounding mean, in optical-density units
# Histogram ranges (low, high, bins); gradients are binned on a log2 scale.
_H_BINS = (0.0, 1.8, 10)
_E_BINS = (0.0, 1.2, 10)
_UNIT_BINS = (0.0, 1.0, 8)
_LOG_GRAD_BINS = (-7.0, -2.0, 6)
_CV_MAX_CHANNELS = 128  # OpenCV 5 filters take up to 128 channels: larger batches are chunked

# Full-resolution planes are kept batch-last, ``(S, S, N)``, so OpenCV filters the whole
# batch as the channels of one image and reductions run over contiguous rows.


def _half(planes: np.ndarray) -> np.ndarray:
    """2x area downsampling of batch-last planes ``(H, W, N)``."""
    return cv2.resize(planes, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA).reshape(
        planes.shape[0] // 2, planes.shape[1] // 2, -1
    )


def _histogram(x: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Square roots of bin frequencies, ``bins`` equal bins over [low, high], per tile.

    ``x`` is batch-last (..., N). Values outside the range count in the first or last
    bin; the square root (Hellinger map) suits linear models and Euclidean distances.
    """
    n = x.shape[-1]
    x = x.reshape(-1, n)
    index = ((x - low) * (bins / (high - low))).clip(0, bins - 1).astype(np.int32)
    index += np.arange(n, dtype=np.int32) * bins
    counts = np.bincount(index.ravel(), minlength=n * bins)
    return np.sqrt(counts.reshape(n, bins) / len(x))


def _plane_mean(planes: np.ndarray) -> np.ndarray:
    """Per-tile mean of batch-last values ``(..., N)`` → ``(N,)``."""
    return planes.reshape(-1, planes.shape[-1]).mean(0, dtype=np.float64).astype(np.float32)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-tile mean of batch-last ``x`` over ``mask`` (both ``(P, N)``); 0 if empty."""
    return (x * mask).sum(0) / np.maximum(mask.sum(0), 1.0)


def _texture(grey: np.ndarray) -> list[np.ndarray]:
    """Gradient-magnitude histogram, mean gradient and Laplacian energy of ``(H, W, N)``."""
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125).reshape(grey.shape)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125).reshape(grey.shape)
    magnitude = np.sqrt(gx * gx + gy * gy)
    laplace = np.abs(cv2.Laplacian(grey, cv2.CV_32F).reshape(grey.shape))
    return [
        _histogram(np.log2(magnitude + 1e-4), *_LOG_GRAD_BINS),
        np.sqrt(_plane_mean(magnitude) * 20)[:, None],
        np.sqrt(_plane_mean(laplace) * 20)[:, None],
    ]


def _contrast(x: np.ndarray) -> np.ndarray:
    """Mean absolute difference of ``(H, W, N)`` at offsets of 1, 2, 4, 8 px (x, y averaged).

    Offsets of 4 and 8 px are taken as 2 and 4 px of the 2x-downsampled plane.
    """
    half = _half(x)
    out = []
    for plane, d in ((x, 1), (x, 2), (half, 2), (half, 4)):
        dx = _plane_mean(np.abs(plane[:, d:] - plane[:, :-d]))
        dy = _plane_mean(np.abs(plane[d:] - plane[:-d]))
        out.append((dx + dy) * 2.0)
    return np.stack(out, 1)


def _nuclei(h: np.ndarray, tissue: np.ndarray) -> list[np.ndarray]:
    """H-rich fractions, blob densities (per 1,000 px) and blob strengths of H ``(S, S, N)``.

    A blob is a local maximum of the Gaussian-smoothed H channel that exceeds the mean
    H of its surroundings (a box of side ~4 sigma) by ``_BLOB_CONTRAST``: a
    centre-surround detector, so faint and dark slides count nuclei alike.
    """
    n, area = h.shape[-1], h.shape[0] * h.shape[1]
    fractions = np.stack([_plane_mean(h > level) for level in _H_LEVELS], 1)
    levels = [(h, tissue), (_half(h), _half(tissue))]
    densities, strengths = [], []
    for level, sigma in _BLOB_SCALES:
        plane, inside = levels[level]
        smooth = cv2.GaussianBlur(plane, (0, 0), sigma).reshape(plane.shape)
        surround = int(4 * sigma) | 1
        response = smooth - cv2.blur(plane, (surround, surround)).reshape(plane.shape)
        size = 2 * int(np.ceil(sigma)) + 1
        local_max = cv2.dilate(response, np.ones((size, size), np.uint8)).reshape(plane.shape)
        peaks = (response >= local_max) & (response > _BLOB_CONTRAST) & (inside > 0.5)
        peaks = peaks.reshape(-1, n)
        count = peaks.sum(0)
        densities.append(np.sqrt(count * 1000.0 / area))
        total = (smooth.reshape(-1, n) * peaks).sum(0, dtype=np.float64)
        strengths.append(total / np.maximum(count, 1))
    return [fractions, np.stack(densities, 1), np.stack(strengths, 1)]


def _colour(tiles: np.ndarray, od: np.ndarray) -> list[np.ndarray]:
    """Colour and stain statistics of every other pixel (a strided view; changes < 1 %)."""
    n = tiles.shape[-1]
    rgb = tiles[::2, ::2].reshape(-1, 3, n).astype(np.float32) * (1.0 / 255.0)
    od = od[::2, ::2].reshape(rgb.shape)
    hed = np.matmul(_HED_FROM_RGB.T, od).clip(min=0.0)  # (P, 3, N)
    h, e = hed[:, 0], hed[:, 1]
    tissue = (od.sum(1) > _TISSUE_OD).astype(np.float32)
    grey = np.einsum("pcn,c->pn", rgb, np.array(_LUMA, np.float32))
    top = rgb.max(1)
    saturation = (top - rgb.min(1)) / np.maximum(top, 1e-3)
    summary = [
        _plane_mean(tissue),
        _plane_mean((grey > 0.85) & (saturation < 0.1)),
        _plane_mean(saturation),
        _masked_mean(h, tissue),
        _masked_mean(e, tissue),
        _masked_mean(h / (h + e + 1e-3), tissue),
    ]
    return [
        rgb.mean(0).T,
        rgb.std(0).T * 3,
        hed.mean(0).T,
        hed.std(0).T * 2,
        np.stack(summary, 1),
        _histogram(h, *_H_BINS),
        _histogram(e, *_E_BINS),
        _histogram(saturation, *_UNIT_BINS),
        _histogram(grey, *_UNIT_BINS),
    ]


def _features(tiles: np.ndarray) -> np.ndarray:
    """Features of batch-last uint8 tiles ``(S, S, 3, N)`` with N <= 512."""
    n = tiles.shape[-1]
    od = cv2.LUT(tiles.reshape(tiles.shape[0], -1), _OD_LUT).reshape(tiles.shape)
    h = np.einsum("hwcn,c->hwn", od, _HED_FROM_RGB[:, 0]).clip(min=0.0)
    tissue = (od.sum(2) > _TISSUE_OD).astype(np.float32)
    grey = np.einsum("hwcn,c->hwn", tiles, np.array(_LUMA, np.float32) / 255.0)
    parts = [
        *_colour(tiles, od),
        *_texture(grey),
        *_texture(_half(grey)),
        _contrast(grey),
        _contrast(h) / 4,
        *_nuclei(h, tissue),
    ]
    return np.concatenate([p.reshape(n, -1) for p in parts], 1).astype(np.float32)


def handcrafted_features(tiles: np.ndarray) -> np.ndarray:
    """uint8 tiles ``(N, 3, S, S)`` → ``(N, D)`` float32 colour, texture and nucleus features."""
    chunks = [
        _features(np.ascontiguousarray(tiles[i : i + _CV_MAX_CHANNELS].transpose(2, 3, 1, 0)))
        for i in range(0, len(tiles), _CV_MAX_CHANNELS)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, HANDCRAFTED_DIM), np.float32)


def feature_names() -> list[str]:
    """Names of the handcrafted features, in output order."""

    def hist(name: str, bins: int) -> list[str]:
        return [f"{name}_hist{i}" for i in range(bins)]

    names = [f"{c}_mean" for c in "rgb"] + [f"{c}_std" for c in "rgb"]
    names += [f"{c}_mean" for c in "hed"] + [f"{c}_std" for c in "hed"]
    names += ["tissue_frac", "glass_frac", "sat_mean", "h_tissue", "e_tissue", "h_share"]
    names += hist("h", _H_BINS[2]) + hist("e", _E_BINS[2])
    names += hist("sat", _UNIT_BINS[2]) + hist("grey", _UNIT_BINS[2])
    for scale in ("", "_half"):
        names += hist(f"grad{scale}", _LOG_GRAD_BINS[2])
        names += [f"grad_mean{scale}", f"laplace{scale}"]
    names += [f"grey_contrast{d}" for d in (1, 2, 4, 8)]
    names += [f"h_contrast{d}" for d in (1, 2, 4, 8)]
    names += [f"h_frac{level}" for level in _H_LEVELS]
    sigmas = [sigma * 2**level for level, sigma in _BLOB_SCALES]
    names += [f"blob_density_s{s:g}" for s in sigmas]
    names += [f"blob_strength_s{s:g}" for s in sigmas]
    return names


HANDCRAFTED_DIM = _features(np.zeros((32, 32, 3, 1), np.uint8)).shape[1]


class HandcraftedEmbedder(Embedder):
    """Colour, texture and nucleus-density statistics; no weights, CPU only."""

    #: Its NumPy and OpenCV calls cost the same per call whatever the batch, so large
    #: batches pay off (2 cores: 216 tiles/s at 64, 173 at 16).
    cpu_batch_size: ClassVar[int] = 64

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 tiles ``(N, H, W, 3)`` → uint8 ``(N, 3, S, S)`` (resized when not ``S``)."""
        tiles = check_tiles(tiles, self.id)
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2)
        if x.shape[-2:] != (self.input_px, self.input_px):
            x = resize_square(x.float(), self.input_px).round_().clamp_(0, 255).to(torch.uint8)
        return x.contiguous()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 batch ``(N, 3, S, S)`` → ``(N, dim)`` float32 features on the CPU."""
        return torch.from_numpy(handcrafted_features(batch.cpu().numpy()))
