"""Colour deconvolution of H&E: optical density and haematoxylin / eosin concentrations.

Ruifrok & Johnston (2001): each stain absorbs light with a fixed RGB optical-density
vector, so per pixel ``OD = c_H·h + c_E·e + c_R·r`` and the concentrations come out
of one matrix product with the inverse of the stain matrix. The vectors are the
published haematoxylin / eosin / DAB ones (the residual channel takes what the two
stains do not explain), as in scikit-image's ``rgb2hed``.
"""

from __future__ import annotations

import numpy as np

#: Unit optical-density vectors (R, G, B) of haematoxylin, eosin and DAB (Ruifrok & Johnston).
STAIN_VECTORS = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
STAIN_VECTORS /= np.linalg.norm(STAIN_VECTORS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(STAIN_VECTORS).astype(np.float32)
# OD of every uint8 value, so conversion is a table lookup instead of a log per pixel.
_OD_TABLE = (-np.log10(np.maximum(np.arange(256), 1) / 255.0)).astype(np.float32)


def optical_density(image: np.ndarray) -> np.ndarray:
    """Optical density ``-log10(I / 255)`` of uint8 RGB ``(H, W, 3)`` pixels, float32."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    return _OD_TABLE[image]


def stain_concentrations(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentrations (optical-density units) of uint8 RGB pixels.

    Returns
    -------
    tuple of numpy.ndarray
        ``(H, W)`` float32 haematoxylin and eosin maps, clipped at 0.
    """
    od = optical_density(image)
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    # Three multiply-adds per pixel: faster than a skinny (N, 3) @ (3, 3) product.
    h = r * _UNMIX[0, 0] + g * _UNMIX[1, 0] + b * _UNMIX[2, 0]
    e = r * _UNMIX[0, 1] + g * _UNMIX[1, 1] + b * _UNMIX[2, 1]
    return np.maximum(h, 0, out=h), np.maximum(e, 0, out=e)
