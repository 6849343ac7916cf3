"""Network factories used by the model cards (timm underneath).

Factories are module-level functions bound with :func:`functools.partial`, so cards
pickle and can be sent to Ray actors.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import nn

from embedders.card import ModelCard


def _timm_vit(card: ModelCard, *, timm_name: str, **kwargs: Any) -> nn.Module:
    import timm  # on first build: the handcrafted embedder never loads timm and torchvision

    if isinstance(kwargs.get("mlp_layer"), str):
        kwargs["mlp_layer"] = getattr(timm.layers, kwargs["mlp_layer"])
    patch = card.native_patch_px or card.patch_px
    return timm.create_model(
        timm_name,
        pretrained=False,
        num_classes=0,
        img_size=card.input_px,
        patch_size=patch,
        **kwargs,
    )


def timm_vit(timm_name: str, **kwargs: Any) -> partial[nn.Module]:
    """A factory building ``timm_name`` at the card's input size and (native) patch size.

    ``mlp_layer`` may name a ``timm.layers`` class (``"SwiGLUPacked"``), so registering a
    card imports no timm.
    """
    return partial(_timm_vit, timm_name=timm_name, **kwargs)


class TruncatedResNet50(nn.Module):
    """ResNet-50 up to ``layer3`` with global average pooling → 1024-d (the CLAM baseline).

    Module names match torchvision's and timm's ResNet-50, so their ImageNet
    checkpoints load after dropping ``layer4`` and ``fc``.
    """

    def __init__(self) -> None:
        super().__init__()
        import timm

        full = timm.create_model("resnet50", pretrained=False, num_classes=0)
        self.conv1, self.bn1, self.act1 = full.conv1, full.bn1, full.act1
        self.maxpool = full.maxpool
        self.layer1, self.layer2, self.layer3 = full.layer1, full.layer2, full.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` → ``(N, 1024)`` pooled ``layer3`` features."""
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(x).flatten(1)


def resnet50_trunc(card: ModelCard) -> nn.Module:
    """Factory for :class:`TruncatedResNet50` (the card carries nothing it needs)."""
    return TruncatedResNet50()


def build_network(card: ModelCard) -> nn.Module:
    """The card's network at its final patch size, randomly initialised."""
    return card.build(replace(card, native_patch_px=None))


def resample_patches(network: nn.Module, card: ModelCard) -> nn.Module:
    """FlexiViT-style: ``network`` (loaded at its native patch) rebuilt at ``card.patch_px``.

    The patch-embedding kernel is resampled with the pseudo-inverse resize of FlexiViT
    (timm ``resample_patch_embed``), which keeps a token's response to a resized patch;
    the position embedding is interpolated to the new grid.
    """
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    with torch.device("meta"):
        target = build_network(card)
    state = network.state_dict()
    patch = [card.patch_px, card.patch_px]
    state["patch_embed.proj.weight"] = resample_patch_embed(state["patch_embed.proj.weight"], patch)
    prefix = 0 if getattr(network, "no_embed_class", False) else network.num_prefix_tokens
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"],
        new_size=list(target.patch_embed.grid_size),
        old_size=list(network.patch_embed.grid_size),
        num_prefix_tokens=prefix,
    )
    target.load_state_dict(state, strict=True, assign=True)
    return target
