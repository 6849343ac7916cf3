"""HoVer-Net targets and post-processing: instance maps ↔ NP / HV maps.

Targets (Graham et al. 2019): NP is the nucleus-pixel mask; HV holds, for every nucleus
pixel, its horizontal and vertical offset from the nucleus centroid scaled to [-1, 1]
within that nucleus. Post-processing turns predicted maps back into instances: NP ≥ 0.5
is the foreground; Sobel filters (kernel 21) of the HV maps peak on the boundaries
between touching nuclei, giving an energy map; markers are the foreground far from
those boundaries; a marker-controlled watershed of the smoothed distance splits the
foreground into nuclei.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from embedders.dense.morphology import clean_mask, disk, drop_small, flood, peak_markers

SOBEL_KERNEL = 21
#: Energy above which a foreground pixel counts as a boundary (not a marker).
BOUNDARY_ENERGY = 0.4


def hv_targets(instances: np.ndarray) -> np.ndarray:
    """``(2, H, W)`` float32 horizontal and vertical centroid offsets scaled to [-1, 1]."""
    hv = np.zeros((2, *instances.shape), np.float32)
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        mask = instances[box] == index + 1
        ys, xs = np.nonzero(mask)
        dx, dy = xs - xs.mean(), ys - ys.mean()
        hv[0][box][mask] = dx / max(float(np.abs(dx).max()), 1e-6)
        hv[1][box][mask] = dy / max(float(np.abs(dy).max()), 1e-6)
    return hv


def _unit(values: np.ndarray) -> np.ndarray:
    return cv2.normalize(values, None, 0.0, 1.0, cv2.NORM_MINMAX, dtype=cv2.CV_32F)


def hovernet_instances(
    nuclear_prob: np.ndarray, hv: np.ndarray, *, min_area_px: float = 10.0
) -> np.ndarray:
    """Instance map from predicted nucleus probability ``(H, W)`` and HV maps ``(2, H, W)``.

    Parameters
    ----------
    nuclear_prob
        Probability that a pixel belongs to a nucleus.
    hv
        Predicted horizontal and vertical offsets.
    min_area_px
        Smallest nucleus (and marker) kept, in pixels.
    """
    foreground = drop_small(ndimage.label(nuclear_prob >= 0.5)[0].astype(np.int32), min_area_px)
    blob = (foreground > 0).astype(np.float32)
    if not blob.any():
        return np.zeros(nuclear_prob.shape, np.int32)
    h_map, v_map = _unit(hv[0].astype(np.float32)), _unit(hv[1].astype(np.float32))
    sobel_h = 1.0 - _unit(cv2.Sobel(h_map, cv2.CV_32F, 1, 0, ksize=SOBEL_KERNEL))
    sobel_v = 1.0 - _unit(cv2.Sobel(v_map, cv2.CV_32F, 0, 1, ksize=SOBEL_KERNEL))
    energy = np.maximum(np.maximum(sobel_h, sobel_v) - (1.0 - blob), 0.0)
    distance = -cv2.GaussianBlur((1.0 - energy) * blob, (3, 3), 0)
    markers = clean_mask(np.clip(blob - (energy >= BOUNDARY_ENERGY), 0, 1) > 0, 2)
    markers = cv2.morphologyEx(markers.astype(np.uint8), cv2.MORPH_OPEN, disk(2))
    labelled = drop_small(ndimage.label(markers)[0].astype(np.int32), min_area_px)
    return drop_small(flood(distance, labelled, blob > 0), min_area_px)


def instance_types(instances: np.ndarray, type_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance class probabilities and class index from per-pixel type probabilities.

    Parameters
    ----------
    instances
        ``(H, W)`` map numbered 1..n.
    type_prob
        ``(K + 1, H, W)`` probabilities, channel 0 background.

    Returns
    -------
    tuple of numpy.ndarray
        ``(n, K)`` float32 mean probabilities of the K classes over each nucleus
        (renormalised without background), and ``(n,)`` their argmax.
    """
    n = int(instances.max(initial=0))
    k = type_prob.shape[0] - 1
    flat = instances.ravel()
    area = np.maximum(np.bincount(flat, minlength=n + 1)[1:], 1)
    probs = np.stack(
        [
            np.bincount(flat, weights=type_prob[c + 1].ravel(), minlength=n + 1)[1:] / area
            for c in range(k)
        ],
        axis=1,
    ).reshape(n, k)
    probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-9)
    return probs.astype(np.float32), probs.argmax(axis=1) if n else np.zeros(0, np.int64)


def distance_instances(
    nuclear_prob: np.ndarray,
    *,
    mpp: float,
    marker_um: float = 2.5,
    open_um: float = 0.5,
    smooth_um: float = 0.5,
    min_area_um2: float = 8.0,
) -> np.ndarray:
    """Instance map from a predicted nucleus probability alone, by distance-peak watershed.

    A distance-peak split like the classical segmenter's first one (its 2.5 µm markers,
    without its shallow-basin merge or outline refinement) on the network's foreground:
    NP ≥ 0.5, opened and hole-filled; one marker per peak of the smoothed distance to
    the background within ``marker_um``; marker-controlled watershed. Unlike
    :func:`hovernet_instances` every foreground blob gets at least one marker (its
    distance peak), so no nucleus is lost when the HV maps are not sharp enough to
    give it one.
    """
    foreground = clean_mask(nuclear_prob >= 0.5, open_um / mpp)
    if not foreground.any():
        return np.zeros(nuclear_prob.shape, np.int32)
    distance = cv2.distanceTransform(foreground.astype(np.uint8), cv2.DIST_L2, 5)
    distance = cv2.GaussianBlur(distance, (0, 0), max(1.0, smooth_um / mpp))
    markers = peak_markers(distance, radius_px=marker_um / mpp, min_height=open_um / mpp)
    return drop_small(flood(-distance, markers, foreground), min_area_um2 / mpp**2)
