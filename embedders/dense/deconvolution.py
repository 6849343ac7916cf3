"""Colour deconvolution of H&E: optical density and haematoxylin / eosin concentrations.

Ruifrok & Johnston (2001): each stain absorbs light with a fixed RGB optical-density
vector, so per pixel ``OD = c_H·h + c_E·e + c_R·r`` and the concentrations come out
of one matrix product with the inverse of the stain matrix. The vectors are the
published haematoxylin / eosin / DAB ones (the residual channel takes what the two
stains do not explain), as in scikit-image's ``rgb2hed``.

Stains vary from lab to lab and scanner to scanner, so :func:`estimated_stain_vectors`
also estimates an image's own haematoxylin and eosin vectors (Macenko et al. 2009: the
extreme angles of the tissue's optical densities in the plane of their two main axes),
and :func:`stain_concentrations` can unmix with those.
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


#: Optical density every channel of a pixel must exceed for it to count as stained tissue
#: when the stain vectors are estimated (Macenko's beta).
TISSUE_OD = 0.15
#: Percentile of the tissue's angles taken as each stain's extreme (Macenko's alpha).
ANGLE_PERCENTILE = 1.0
#: Pixels the estimate samples, about (a regular grid over the image).
_SAMPLE = 65_536


def estimated_stain_vectors(image: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """The haematoxylin and eosin vectors of one image, and a residual orthogonal to both.

    Macenko's estimate: the optical densities of the stained pixels (every channel above
    :data:`TISSUE_OD`) are projected on the plane of their two main axes, and the
    directions at the :data:`ANGLE_PERCENTILE` and ``100 - ANGLE_PERCENTILE`` percentile
    angles are the two stains (haematoxylin the one absorbing more red). Each is then
    moved ``1 - weight`` of the way back to the published vector (an estimate from a
    tile with little of one stain is noisy), and the third row is their cross product.

    Parameters
    ----------
    image
        uint8 RGB ``(H, W, 3)``.
    weight
        Share of the image's own estimate in each vector, in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` unit rows: haematoxylin, eosin, residual (the published ones, with the
        cross product as residual, when fewer than 100 pixels are stained).
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    image = np.asarray(image)
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _SAMPLE)))
    od = optical_density(image[::step, ::step]).reshape(-1, 3)
    tissue = od[(od > TISSUE_OD).all(axis=1)].astype(np.float64)
    h, e = STAIN_VECTORS[0], STAIN_VECTORS[1]
    if len(tissue) >= 100 and weight > 0:
        plane = np.linalg.eigh(np.cov(tissue.T))[1][:, 1:]  # the two largest axes
        projected = tissue @ plane
        angles = np.arctan2(projected[:, 1], projected[:, 0])
        ends = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
        found = [plane @ np.array([np.cos(a), np.sin(a)]) for a in ends]
        found = [v * np.sign(v.sum()) / np.linalg.norm(v) for v in found]
        if found[0][0] < found[1][0]:  # haematoxylin absorbs more red than eosin
            found.reverse()
        h, e = ((1 - weight) * ref + weight * v for ref, v in zip((h, e), found, strict=True))
    rows = np.stack([h, e, np.cross(h, e)])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def stain_concentrations(
    image: np.ndarray, vectors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and eosin concentrations (optical-density units) of uint8 RGB pixels.

    Parameters
    ----------
    image
        uint8 RGB ``(H, W, 3)``.
    vectors
        ``(3, 3)`` stain vectors to unmix with (rows: haematoxylin, eosin, residual), as
        from :func:`estimated_stain_vectors`; None: the published :data:`STAIN_VECTORS`.

    Returns
    -------
    tuple of numpy.ndarray
        ``(H, W)`` float32 haematoxylin and eosin maps, clipped at 0.
    """
    unmix = _UNMIX if vectors is None else np.linalg.inv(vectors).astype(np.float32)
    od = optical_density(image)
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    # Three multiply-adds per pixel: faster than a skinny (N, 3) @ (3, 3) product.
    h = r * unmix[0, 0] + g * unmix[1, 0] + b * unmix[2, 0]
    e = r * unmix[0, 1] + g * unmix[1, 1] + b * unmix[2, 1]
    return np.maximum(h, 0, out=h), np.maximum(e, 0, out=e)
