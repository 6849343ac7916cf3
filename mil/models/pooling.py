"""Mean and max pooling baselines (embedding-level, as in Ilse et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from mil.models.base import HeadOutput, MILHead, full_mask, masked_mean
from mil.models.registry import heads


def _columns(scores: torch.Tensor) -> torch.Tensor:
    """(B, N, 1) scores as (B, N); wider ones unchanged."""
    return scores[..., 0] if scores.shape[-1] == 1 else scores


class _Pooled(MILHead):
    """A pooling head: the encoder (see :class:`MILHead`) and a linear classifier of the pool."""

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        dropout: float = 0.25,
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        self.classifier = nn.Linear(hidden_dim, n_out)


@heads.register("mean", description="mean of encoded instances", paper="Ilse et al. 2018")
class MeanPool(_Pooled):
    """Mean of the encoded instances; scores are each instance's own logits."""

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        z = masked_mean(h, mask)
        # The classifier is linear, so the bag logit is the mean of these.
        instance = self.classifier(h).masked_fill(~mask[..., None], 0.0)
        return HeadOutput(logits=self.classifier(z), scores=_columns(instance), embedding=z)


@heads.register(
    "max", description="feature-wise max of encoded instances", paper="Ilse et al. 2018"
)
class MaxPool(_Pooled):
    """Feature-wise max; an instance's score is the share of features it supplies."""

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x).masked_fill(~mask[..., None], -torch.inf)
        z, winner = h.max(dim=1)
        share = torch.zeros(mask.shape, dtype=z.dtype, device=z.device).scatter_add(
            1, winner, torch.full_like(z, 1.0 / z.shape[1])
        )
        return HeadOutput(logits=self.classifier(z), scores=share, embedding=z)
