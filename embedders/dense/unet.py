"""A small HoVer-Net-style U-Net built for CPUs: nucleus-pixel, HV and optional type branches.

The encoder starts with a stride-2 convolution and the branches end at half
resolution, their maps upsampled bilinearly: full-resolution convolutions would cost
half the time of a step on a CPU, and nuclei (20-40 px across at 0.25 µm/px) are still
10-20 px at half resolution. Four double-convolution stages halve the size and
double the channels, and the decoder climbs back with skip connections. The shared
decoder ends in one small branch per output, as in HoVer-Net: nucleus-pixel logits
(2), horizontal/vertical centroid offsets (2, tanh) and, when the model has classes,
type logits (K + 1). Every layer is trained; nothing is frozen.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def _double(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


def _branch(channels: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, outputs, 1),
    )


class NucleusUNet(nn.Module):
    """Encoder-decoder from normalised RGB ``(N, 3, H, W)`` to ``np``, ``hv`` and ``type`` maps.

    Parameters
    ----------
    width
        Channels of the first (half-resolution) stage; each deeper stage doubles them.
    depth
        Number of stages (the input side must be a multiple of ``2 ** depth``).
    n_types
        Nucleus classes; 0 gives a single-channel (background) type map.
    """

    def __init__(self, width: int = 16, depth: int = 4, n_types: int = 0) -> None:
        super().__init__()
        if width < 4 or depth < 2:
            raise ValueError(f"NucleusUNet needs width >= 4 and depth >= 2, got {width}, {depth}")
        self.width, self.depth, self.n_types = width, depth, n_types
        channels = [width * 2**i for i in range(depth)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.down = nn.ModuleList(
            [_double(width, channels[0])]
            + [_double(channels[i - 1], channels[i]) for i in range(1, depth)]
        )
        self.up = nn.ModuleList(
            [
                _double(channels[i] + channels[i - 1], channels[i - 1])
                for i in range(depth - 1, 0, -1)
            ]
        )
        self.np_branch = _branch(width, 2)
        self.hv_branch = _branch(width, 2)
        self.type_branch = _branch(width, n_types + 1) if n_types else None

    @property
    def multiple_px(self) -> int:
        """The input side must be a multiple of this."""
        return 2**self.depth

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` → ``np`` (2), ``hv`` (2) and ``type`` (K + 1) maps."""
        skips = []
        x = self.stem(image)
        for index, stage in enumerate(self.down):
            if index:
                x = functional.max_pool2d(x, 2)
            x = stage(x)
            skips.append(x)
        for stage, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = functional.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = stage(torch.cat([x, skip], dim=1))
        maps = {"np": self.np_branch(x), "hv": self.hv_branch(x)}
        if self.type_branch is not None:
            maps["type"] = self.type_branch(x)
        size = image.shape[-2:]
        maps = {
            k: functional.interpolate(v, size=size, mode="bilinear", align_corners=False)
            for k, v in maps.items()
        }
        maps["hv"] = torch.tanh(maps["hv"])
        if "type" not in maps:
            maps["type"] = torch.zeros_like(maps["hv"][:, :1])
        return maps
