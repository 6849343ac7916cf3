"""Model cards: what an embedder is, as data (architecture, input, output, source, licence)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

POOLINGS = ("cls", "mean", "cls+mean", "avg", "head", "stats")
EMBEDDER_KINDS = ("network", "handcrafted")
TOKEN_POOLINGS = ("cls", "mean", "cls+mean")
_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """Everything known about one embedder before it is built.

    Parameters
    ----------
    name
        Registry name users pass to :func:`embedders.create`.
    arch
        Human-readable architecture (``"ViT-L/16"``).
    build
        Factory ``build(card) -> torch.nn.Module`` (``None`` for entries without a
        network); called inside a device context, so it may run on ``meta``.
    width
        Width of one pooled vector (token width for ViTs, channels for CNNs).
    pooling
        ``"cls"``, ``"mean"`` (patch tokens, registers excluded), ``"cls+mean"`` for
        token models; ``"avg"`` for CNNs pooling inside the network; ``"head"`` for
        any timm model's own pooled head; ``"stats"`` for handcrafted features.
    input_px
        Side of the square model input; tiles of any size are resized to it.
    patch_px, native_patch_px
        Patch size used and the one the weights were trained at (they differ for
        FlexiViT-style entries whose patch embedding is resampled after loading).
    mean, std
        Normalisation of RGB in [0, 1].
    params
        Number of parameters of the built network (checked by the contract tests).
    hf_id, hf_filename
        Hugging Face repository and file of the official weights, when published.
    license, gated
        Licence of the weights; whether the repository requires accepting terms.
    key_map
        Name of the checkpoint key mapping (see :mod:`embedders.keymaps`).
    needs_weights
        ``False`` only for entries with nothing to load (handcrafted).
    embedder
        Which embedder class runs the entry: ``"network"`` or ``"handcrafted"``.
    reference
        Where the architecture and preprocessing were taken from.
    """

    name: str
    arch: str
    build: Callable[[ModelCard], Any] = field(repr=False, compare=False)
    width: int
    pooling: str
    input_px: int = 224
    patch_px: int | None = None
    native_patch_px: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    params: int = 0
    hf_id: str | None = None
    hf_filename: str = "model.safetensors"
    license: str = "unknown"
    gated: bool = False
    key_map: str = "timm"
    needs_weights: bool = True
    embedder: str = "network"
    reference: str = ""

    def __post_init__(self) -> None:
        if not _ID.match(self.name):
            raise ValueError(f"model name {self.name!r} may hold only letters, digits and ._-")
        if self.embedder not in EMBEDDER_KINDS:
            raise ValueError(f"embedder must be one of {EMBEDDER_KINDS}, got {self.embedder!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.width <= 0 or self.input_px <= 0:
            raise ValueError(f"width and input_px must be positive ({self.name})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std must be three values with std > 0 ({self.name})")
        if self.patch_px is not None and self.input_px % self.patch_px:
            raise ValueError(
                f"input_px {self.input_px} is not a multiple of patch_px {self.patch_px}"
            )

    @property
    def dim(self) -> int:
        """Output dimension with this card's pooling."""
        return 2 * self.width if self.pooling == "cls+mean" else self.width

    @property
    def tokens(self) -> bool:
        """Whether the network returns tokens that this card pools (ViTs)."""
        return self.pooling in TOKEN_POOLINGS

    def with_pooling(self, pooling: str) -> ModelCard:
        """A copy pooling tokens another way (token models only)."""
        if pooling == self.pooling:
            return self
        if not (self.tokens and pooling in TOKEN_POOLINGS):
            raise ValueError(
                f"{self.name} pools with {self.pooling!r}; it cannot pool with {pooling!r}"
            )
        return replace(self, pooling=pooling)

    def row(self) -> dict[str, Any]:
        """The card as a table row for :func:`embedders.list_models`."""
        return {
            "arch": self.arch,
            "dim": self.dim,
            "patch": self.patch_px,
            "input_px": self.input_px,
            "pooling": self.pooling,
            "params": self.params,
            "hf_id": self.hf_id,
            "license": self.license,
            "gated": self.gated,
            "needs_weights": self.needs_weights,
        }
