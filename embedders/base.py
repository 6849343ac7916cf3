"""The embedder contract every registry entry fulfils: tiles in, float32 vectors out.

An embedder turns uint8 RGB tiles ``(N, H, W, 3)`` of any size into ``(N, dim)``
float32 features in two steps that can run in different threads:

* :meth:`Embedder.preprocess` (CPU, thread-safe): resize to ``input_px`` and
  normalise; the loader threads of the execution stage call it;
* :meth:`Embedder.forward` (the model's device): batch to device, network, pooling,
  back to CPU float32.

:meth:`Embedder.identity` says exactly what produced a feature store (model, pooling,
preprocessing, weights checksum, precision, package versions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional

from embedders.card import ModelCard
from slideflow_core.provenance import package_versions

_PACKAGES = ("torch", "timm", "safetensors", "huggingface_hub", "opencv-python-headless")


class Embedder(ABC):
    """Base class of embedders: metadata from a :class:`ModelCard` plus the two steps.

    Parameters
    ----------
    card
        The entry's card (with the pooling actually used).
    id
        Store part name (letters, digits, ``._-``).
    device
        Where :meth:`forward` computes.
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast, CUDA only).
    weights
        Where the weights came from: ``{"source": ..., "sha256": ...}`` or
        ``{"source": "random-init"}`` or ``{"source": "none"}``.
    """

    #: Batch size on the CPU when none is given: a network runs fastest on batches
    #: whose activations stay in the caches (ViT-S/14 on 2 cores: 21 tiles/s at 16,
    #: 18 at 64; ``benchmarks/embedding.py`` measures 16, 32 and 64).
    cpu_batch_size: ClassVar[int] = 16

    def __init__(
        self,
        card: ModelCard,
        *,
        id: str,
        device: torch.device,
        precision: str,
        weights: dict[str, Any],
    ) -> None:
        self.card = card
        self.id = id
        self.device = device
        self.precision = precision
        self.weights = dict(weights)

    @property
    def name(self) -> str:
        """Registry name of the entry."""
        return self.card.name

    @property
    def dim(self) -> int:
        """Output dimension."""
        return self.card.dim

    @property
    def input_px(self) -> int:
        """Side of the model input; tiles of other sizes are resized to it."""
        return self.card.input_px

    def identity(self) -> dict[str, Any]:
        """JSON-ready record of what produces this embedder's features (for provenance)."""
        card = self.card
        return {
            "name": card.name,
            "id": self.id,
            "arch": card.arch,
            "dim": self.dim,
            "pooling": card.pooling,
            "input_px": card.input_px,
            "patch_px": card.patch_px,
            "mean": list(card.mean),
            "std": list(card.std),
            "resize": "bilinear-antialias",
            "weights": dict(self.weights),
            "precision": self.precision,
            "packages": package_versions(_PACKAGES),
        }

    @abstractmethod
    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """Tiles ``(N, H, W, 3)`` uint8 → the CPU batch :meth:`forward` takes."""

    @abstractmethod
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch from :meth:`preprocess` → ``(N, dim)`` float32 features on the CPU."""

    def embed(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles ``(N, H, W, 3)`` uint8 → ``(N, dim)`` float32 features (both steps)."""
        return self.forward(self.preprocess(tiles)).numpy()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.id!r}, dim={self.dim}, input_px={self.input_px}, "
            f"device={self.device}, precision={self.precision})"
        )


def check_tiles(tiles: np.ndarray, owner: str) -> np.ndarray:
    """``tiles`` as a C-contiguous ``(N, H, W, 3)`` uint8 array, or a clear ``ValueError``."""
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(
            f"{owner} takes uint8 RGB tiles shaped (N, H, W, 3); got {tiles.dtype} {tiles.shape}"
        )
    return np.ascontiguousarray(tiles)


def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """Float batch ``(N, C, H, W)`` resized to ``side`` x ``side`` (bilinear, antialiased).

    Returned unchanged when it already has that size.
    """
    if x.shape[-2:] == (side, side):
        return x
    return functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
