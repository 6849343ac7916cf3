"""The segmenter contract: one RGB image at a stated µm/px in, an instance map out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True, eq=False)
class TileSegmentation:
    """Nuclei found in one image.

    Attributes
    ----------
    labels
        ``(H, W)`` int32 instance map: 0 background, nuclei numbered 1..n without gaps.
    classes
        Names of the nucleus types the segmenter tells apart (empty when it has none).
    probabilities
        ``(n, len(classes))`` float32 class probabilities of nuclei 1..n, or None.
    """

    labels: np.ndarray = field(repr=False)
    classes: tuple[str, ...] = ()
    probabilities: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.labels.ndim != 2:
            raise ValueError(f"labels must be 2-D, got shape {self.labels.shape}")
        if self.probabilities is not None and self.probabilities.shape != (
            self.n,
            len(self.classes),
        ):
            raise ValueError(
                f"probabilities have shape {self.probabilities.shape}; expected "
                f"({self.n}, {len(self.classes)})"
            )

    @property
    def n(self) -> int:
        """Number of nuclei."""
        return int(self.labels.max(initial=0))


class Segmenter(ABC):
    """Base class of nucleus segmenters (classical, learned heads, adapters).

    A segmenter works at one resolution, :attr:`mpp`: whole-slide runs read the slide
    there, and images given to :meth:`segment` must already be at it.
    """

    name: str = "segmenter"

    @property
    @abstractmethod
    def mpp(self) -> float:
        """µm per pixel of the images the segmenter expects."""

    @property
    def classes(self) -> tuple[str, ...]:
        """Nucleus types it distinguishes (none by default)."""
        return ()

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-ready record of what produces its output (name, parameters, weights)."""

    @abstractmethod
    def segment(self, image: np.ndarray) -> TileSegmentation:
        """Nuclei of one ``(H, W, 3)`` uint8 RGB image at :attr:`mpp`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mpp={self.mpp})"


def segment_resampled(
    segment: Callable[[np.ndarray], TileSegmentation], image: np.ndarray, factor: float
) -> TileSegmentation:
    """``segment`` run on ``image`` resized by ``factor``, its nuclei mapped back to ``image``.

    Labels come back by nearest neighbour and are renumbered 1..n (a nucleus can vanish
    when shrunk; its class probabilities go with it). A factor within 0.1 % of 1 runs
    ``segment`` on ``image`` itself.
    """
    if abs(factor - 1) < 1e-3:
        return segment(image)
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    found = segment(cv2.resize(image, size, interpolation=interpolation))
    labels = cv2.resize(found.labels, (width, height), interpolation=cv2.INTER_NEAREST)
    present = np.unique(labels[labels > 0])
    lookup = np.zeros(found.n + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    labels = lookup[labels]
    if found.probabilities is None:
        return TileSegmentation(labels, found.classes)
    return TileSegmentation(labels, found.classes, found.probabilities[present - 1])
