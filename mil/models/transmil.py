"""TransMIL (Shao et al. 2021): Nyström self-attention layers and a PPEG positional layer.

Instances become tokens after a class token, padded to a square grid by
repeating the first ones; two Nyström attention layers surround the
pyramid position encoding generator (depthwise 7/5/3 convolutions over the
grid). The class token's final state is classified. An instance's score is
the class token's attention to it in the last layer (mean over heads), taken
from the same Nyström factors the layer uses.

Bags are processed one at a time (each has its own grid), so a padded batch is
split inside :meth:`TransMIL.forward`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mil.models.base import Dropout, HeadOutput, MILHead, full_mask
from mil.models.registry import heads


def iterative_pinv(x: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of (…, m, m) by the iteration of Razavi et al. 2014."""
    abs_x = x.abs()
    z = x.transpose(-1, -2) / (abs_x.sum(-1).amax() * abs_x.sum(-2).amax())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated with ``landmarks`` Nyström landmarks.

    Sequences no longer than ``landmarks`` use exact softmax attention.
    """

    def __init__(self, dim: int, *, heads: int = 8, landmarks: int = 256, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_dim {dim} must be divisible by heads {heads}")
        self.heads, self.landmarks = heads, landmarks
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), Dropout(dropout))
        self.residual = nn.Conv2d(heads, heads, (33, 1), padding=(16, 0), groups=heads, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n, dim) → (output (B, n, dim), attention of token 0 to all tokens (B, n))."""
        b, n, dim = x.shape
        m = self.landmarks
        pad = (-n) % m if n > m else 0
        if pad:  # pad in front so that the sequence splits into m equal segments
            x = F.pad(x, (0, 0, pad, 0))
        q, k, v = (
            t.reshape(b, -1, self.heads, dim // self.heads).transpose(1, 2)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        q = q * self.scale
        if n <= m:
            attention = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
            out = attention @ v
            first = attention[:, :, 0]
        else:
            segment = (n + pad) // m
            q_land = q.reshape(b, self.heads, m, segment, -1).mean(dim=3)
            k_land = k.reshape(b, self.heads, m, segment, -1).mean(dim=3)
            a1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)
            a2_inv = iterative_pinv(torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1))
            a3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)
            out = (a1 @ a2_inv) @ (a3 @ v)
            first = (a1[:, :, pad : pad + 1] @ a2_inv @ a3)[:, :, 0]
        out = out + self.residual(v)
        out = self.out(out.transpose(1, 2).reshape(b, -1, dim))
        return out[:, pad:], first[:, :, pad:].mean(dim=1)


class TransLayer(nn.Module):
    """Pre-norm residual Nyström attention."""

    def __init__(self, dim: int, *, heads: int, landmarks: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = NystromAttention(dim, heads=heads, landmarks=landmarks, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, first = self.attention(self.norm(x))
        return x + out, first


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7/5/3 convolutions over the token grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3)
        )

    def forward(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        cls, grid = tokens[:, :1], tokens[:, 1:]
        grid = grid.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


@heads.register(
    "transmil",
    description="Nyström self-attention + PPEG over the square token grid",
    paper="Shao et al. 2021",
)
class TransMIL(MILHead):
    """Transformer MIL; scores are the class token's last-layer attention."""

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 512,
        heads: int = 8,
        landmarks: int = 256,
        dropout: float = 0.1,
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        options = {"heads": heads, "landmarks": landmarks, "dropout": dropout}
        self.layer1 = TransLayer(hidden_dim, **options)
        self.ppeg = PPEG(hidden_dim)
        self.layer2 = TransLayer(hidden_dim, **options)
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = nn.Linear(hidden_dim, n_out)

    def _one(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[1]
        side = math.ceil(math.sqrt(n))
        fill = side * side - n
        filler = h.repeat(1, math.ceil(fill / n), 1)[:, :fill] if fill else h[:, :0]
        tokens = torch.cat([self.cls_token, h, filler], dim=1)
        tokens, _ = self.layer1(tokens)
        tokens = self.ppeg(tokens, side)
        tokens, first = self.layer2(tokens)
        return self.norm(tokens[:, 0]), first[:, 1 : 1 + n]

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        embeddings, scores = [], torch.zeros(mask.shape, dtype=h.dtype, device=h.device)
        for i in range(len(h)):
            n = int(mask[i].sum())
            z, first = self._one(h[i : i + 1, mask[i]])
            embeddings.append(z)
            scores[i, mask[i]] = first[0, :n]
        z = torch.cat(embeddings)
        return HeadOutput(logits=self.classifier(z), scores=scores, embedding=z)
