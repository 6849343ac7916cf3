"""A small dense decoder on a ViT's patch tokens: nucleus-pixel, HV and type maps.

The PLUTO / CellViT idea at its smallest: the backbone's patch tokens (a grid at
1/patch resolution) are projected and upsampled in steps back to the input size, where
a shallow convolutional stem on the image itself restores the detail the tokens lost;
three 1x1 heads give NP logits (2), HV offsets (2, tanh) and type logits (K + 1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

# Channels at full resolution, where convolutions cost the most on a CPU.
_FULL = 16


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class DenseDecoder(nn.Module):
    """Upsampling decoder from ``(N, D, h, w)`` tokens and the image to three dense maps.

    Parameters
    ----------
    token_dim
        Width of the backbone's tokens.
    n_types
        Nucleus classes (the type head has ``n_types + 1`` outputs, 0 = background).
    width
        Channels after the token projection (halved at each upsampling step).
    """

    def __init__(self, token_dim: int, n_types: int = 0, width: int = 128) -> None:
        super().__init__()
        self.token_dim, self.n_types, self.width = token_dim, n_types, width
        self.project = nn.Conv2d(token_dim, width, 1)
        self.up = nn.ModuleList(
            [_block(width, width // 2), _block(width // 2, width // 4), _block(width // 4, _FULL)]
        )
        self.stem = nn.Sequential(_block(3, _FULL), _block(_FULL, _FULL))
        self.fuse = _block(2 * _FULL, _FULL)
        self.np_head = nn.Conv2d(_FULL, 2, 1)
        self.hv_head = nn.Conv2d(_FULL, 2, 1)
        self.type_head = nn.Conv2d(_FULL, n_types + 1, 1)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` and token grids → ``np``, ``hv``, ``type`` maps."""
        size = image.shape[-2:]
        x = self.project(tokens)
        for step, block in enumerate(self.up):  # 1/4, 1/2, then full size
            scale = 2 ** (len(self.up) - 1 - step)
            x = block(
                functional.interpolate(
                    x,
                    size=(size[0] // scale, size[1] // scale),
                    mode="bilinear",
                    align_corners=False,
                )
            )
        x = self.fuse(torch.cat([x, self.stem(image)], dim=1))
        return {
            "np": self.np_head(x),
            "hv": torch.tanh(self.hv_head(x)),
            "type": self.type_head(x),
        }


class DenseHeadModel(nn.Module):
    """Backbone (a timm ViT) plus :class:`DenseDecoder`.

    Parameters
    ----------
    backbone
        A timm VisionTransformer (``forward_features`` returns prefix + patch tokens).
    decoder
        The decoder.
    patch_px
        Patch size of the backbone.
    freeze_backbone
        Keep the backbone's weights fixed (and out of autograd).
    """

    def __init__(
        self, backbone: nn.Module, decoder: DenseDecoder, patch_px: int, freeze_backbone: bool
    ) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder
        self.patch_px = patch_px
        self.num_prefix = int(getattr(backbone, "num_prefix_tokens", 1))
        self.freeze_backbone = freeze_backbone
        self.backbone.requires_grad_(not freeze_backbone)

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """Patch tokens of ``image`` as a ``(N, D, H / patch, W / patch)`` grid."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            features = self.backbone.forward_features(image)[:, self.num_prefix :]
        n, _, dim = features.shape
        h, w = image.shape[-2] // self.patch_px, image.shape[-1] // self.patch_px
        return features.transpose(1, 2).reshape(n, dim, h, w)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised ``(N, 3, S, S)`` images → the decoder's maps."""
        return self.decoder(image, self.tokens(image))
