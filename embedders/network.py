"""Embedders backed by a torch network (timm ViTs, the truncated ResNet-50, any timm model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from embedders.base import Embedder, check_tiles, resize_square
from embedders.card import ModelCard
from embedders.device import autocast


def pool_tokens(tokens: torch.Tensor, pooling: str, num_prefix_tokens: int) -> torch.Tensor:
    """Pool ViT tokens ``(N, T, D)`` after the final norm.

    ``"cls"`` is token 0; ``"mean"`` averages the patch tokens, leaving out the class
    and register tokens (the first ``num_prefix_tokens``); ``"cls+mean"`` concatenates
    both (Virchow's embedding).
    """
    if pooling == "cls":
        return tokens[:, 0]
    patch_mean = tokens[:, num_prefix_tokens:].mean(dim=1)
    if pooling == "mean":
        return patch_mean
    return torch.cat([tokens[:, 0], patch_mean], dim=1)


class NetworkEmbedder(Embedder):
    """A network with its preprocessing and pooling.

    Parameters
    ----------
    network
        The built network with its weights loaded, in eval mode on ``device``.
    compile
        Wrap the forward in :func:`torch.compile`.
    **kwargs
        Passed to :class:`~embedders.base.Embedder`.
    """

    def __init__(
        self, card: ModelCard, network: nn.Module, *, compile: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(card, **kwargs)
        network = network.eval().requires_grad_(False)
        if self.device.type == "cuda":
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self._num_prefix = int(getattr(network, "num_prefix_tokens", 1))
        self._run = torch.compile(self.network_forward) if compile else self.network_forward
        # x / 255 then (x - mean) / std, folded into one multiply-add.
        std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """uint8 tiles ``(N, H, W, 3)`` → normalised float32 ``(N, 3, S, S)`` on the CPU.

        Tiles of another size are resized (bilinear with antialiasing) to ``input_px``.
        Safe to call from several threads at once. Pinned only when the model is on CUDA.
        """
        tiles = check_tiles(tiles, self.id)
        x = resize_square(torch.from_numpy(tiles).permute(0, 3, 1, 2).float(), self.input_px)
        x = torch.addcmul(self._shift, x, self._scale).contiguous()
        return x.pin_memory() if self.device.type == "cuda" else x

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised batch → ``(N, dim)`` float32 on the CPU (AMP and channels_last on CUDA)."""
        x = batch.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self._run(x)
        return out.float().cpu()

    def network_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network and pooling on a batch already on the device (no transfer, no autocast)."""
        if not self.card.tokens:
            return self.network(x)
        tokens = self.network.forward_features(x)
        return pool_tokens(tokens, self.card.pooling, self._num_prefix)
