"""Shared steps of nucleus post-processing: disks, markers, watershed, size filters."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed


def disk(radius_px: float) -> np.ndarray:
    """Elliptic structuring element of radius ``radius_px`` (at least 1 px)."""
    r = max(1, round(radius_px))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def clean_mask(mask: np.ndarray, open_radius_px: float) -> np.ndarray:
    """Binary opening (removes specks and thin bridges) then hole filling."""
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, disk(open_radius_px))
    return ndimage.binary_fill_holes(opened)


def peak_markers(height: np.ndarray, *, radius_px: float, min_height: float) -> np.ndarray:
    """Label the local maxima of ``height`` (one per ``radius_px`` disk, above ``min_height``).

    A plateau gives one marker (its pixels are connected and labelled together).
    """
    peaks = (height >= cv2.dilate(height, disk(radius_px))) & (height > min_height)
    markers, _ = ndimage.label(peaks)
    return markers.astype(np.int32)


def flood(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Marker-controlled watershed of ``elevation`` restricted to ``mask`` (int32 labels)."""
    return watershed(elevation, markers, mask=mask).astype(np.int32)


def drop_small(labels: np.ndarray, min_area_px: float) -> np.ndarray:
    """Remove instances smaller than ``min_area_px`` and renumber the rest 1..n (in place)."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_area_px
    keep[0] = False
    lookup = np.zeros(len(areas), np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[labels]
