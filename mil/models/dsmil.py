"""DSMIL (Li et al. 2021): a max-instance stream and a bag stream attending to it.

The instance stream scores every instance per output; its top instance per
output is the critical instance. The bag stream weighs instances by the
similarity of their queries to the critical instance's query, pools their
values per output and classifies the pooled matrix with a 1-D convolution.
Both streams are trained with the task loss (weights 0.5 / 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mil.models.base import Dropout, HeadOutput, MILHead, full_mask, masked_softmax
from mil.models.registry import heads


@heads.register(
    "dsmil",
    description="instance (max) stream + critical-instance attention bag stream",
    paper="Li et al. 2021",
    aux="max-instance stream (0.5)",
)
class DSMIL(MILHead):
    """Dual-stream MIL; scores are the bag stream's attention per output."""

    aux_weight = 0.5

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        q_dim: int = 128,
        dropout: float = 0.25,
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        self.instance_classifier = nn.Linear(hidden_dim, n_out)
        self.query = nn.Sequential(nn.Linear(hidden_dim, q_dim), nn.Tanh())
        self.value = nn.Sequential(Dropout(dropout), nn.Linear(hidden_dim, hidden_dim))
        self.bag_classifier = nn.Conv1d(n_out, n_out, kernel_size=hidden_dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        instance = self.instance_classifier(h).masked_fill(~mask[..., None], -torch.inf)
        top_logits, critical = instance.max(dim=1)  # (B, C) each
        q = self.query(h)
        q_critical = torch.gather(q, 1, critical[..., None].expand(-1, -1, q.shape[-1]))
        similarity = torch.einsum("bnq,bcq->bnc", q, q_critical) / math.sqrt(q.shape[-1])
        a = masked_softmax(similarity, mask)  # (B, N, C)
        z = torch.einsum("bnc,bne->bce", a, self.value(h))
        logits = self.bag_classifier(z)[..., 0]
        scores = a[..., 0] if a.shape[-1] == 1 else a
        return HeadOutput(
            logits=logits, scores=scores, embedding=z.mean(dim=1), aux_logits=top_logits
        )
