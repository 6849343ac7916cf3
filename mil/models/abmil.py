"""Attention-based MIL and its gated form (Ilse et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from mil.models.base import AttentionNet, HeadOutput, MILHead, full_mask, masked_softmax
from mil.models.registry import heads


@heads.register(
    "abmil", description="attention pooling a = softmax(wᵀ tanh(V h))", paper="Ilse et al. 2018"
)
class ABMIL(MILHead):
    """Attention pooling; scores are the attention weights (summing to 1 per bag)."""

    gated = False

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
    ):
        super().__init__(in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout)
        self.attention = AttentionNet(hidden_dim, attn_dim, 1, gated=self.gated, dropout=dropout)
        self.classifier = nn.Linear(hidden_dim, n_out)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        a = masked_softmax(self.attention(h)[..., 0], mask)
        z = torch.einsum("bn,bne->be", a, h)
        return HeadOutput(logits=self.classifier(z), scores=a, embedding=z)


@heads.register(
    "gated_abmil",
    description="gated attention a = softmax(wᵀ(tanh(V h) ⊙ sigm(U h)))",
    paper="Ilse et al. 2018",
)
class GatedABMIL(ABMIL):
    """ABMIL with the sigmoid gate on the attention."""

    gated = True
