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
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        self.attention = AttentionNet(hidden_dim, attn_dim, 1, gated=self.gated, dropout=dropout)
        self.classifier = nn.Linear(hidden_dim, n_out)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        if mask is not None and self.pack_rows:
            return self._packed(x, mask)
        h = self.encoder(x)
        a = masked_softmax(self.attention(h)[..., 0], full_mask(x, mask))
        z = torch.einsum("bn,bne->be", a, h)
        return HeadOutput(logits=self.classifier(z), scores=a, embedding=z)

    def _packed(self, x: torch.Tensor, mask: torch.Tensor) -> HeadOutput:
        """A padded batch with the encoder and attention run on its real rows only.

        Heavy-tailed bag sizes pad a batch by a quarter or more; the padded rows
        would cost as much as real ones in every per-instance layer.
        """
        bag, row = mask.nonzero(as_tuple=True)
        h = self.encoder(x[bag, row])  # (R, E)
        logits = self.attention(h)[:, 0]
        padded = torch.full(mask.shape, -torch.inf, dtype=logits.dtype, device=x.device)
        a = torch.softmax(padded.index_put((bag, row), logits), dim=1)  # padded rows: exactly 0
        weighted = a[bag, row, None].to(h.dtype) * h
        z = torch.zeros(len(x), h.shape[1], dtype=h.dtype, device=x.device).index_add(
            0, bag, weighted
        )
        return HeadOutput(logits=self.classifier(z), scores=a, embedding=z)


@heads.register(
    "gated_abmil",
    description="gated attention a = softmax(wᵀ(tanh(V h) ⊙ sigm(U h)))",
    paper="Ilse et al. 2018",
)
class GatedABMIL(ABMIL):
    """ABMIL with the sigmoid gate on the attention."""

    gated = True
