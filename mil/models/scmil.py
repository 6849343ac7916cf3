"""SC-MIL (Juyal et al., WACV 2024): supervised contrastive learning of bag representations.

Bags are pooled with gated attention into a representation ``z`` that a
projection head (linear, ReLU, linear) maps onto the unit sphere, where a
supervised contrastive loss (Khosla et al. 2020, temperature 0.1) pulls bags of
the same class together and pushes the others away; decoupling representation
learning from classifier learning is what helps under label imbalance. Modes:

- ``progressive`` (the paper's joint training, default): one joint training whose
  loss moves from the contrastive loss to the classifier's over the epochs,
  ``β_t · L_SCL + (1 − β_t) · L_task`` with ``β_t = 1 − (t / T)²`` at epoch ``t`` of
  ``T`` (the parabolic hand-over of cumulative learning, Zhou et al. 2020, BBN,
  that the paper builds on). Early stopping and best-weight selection only look
  at epochs where the task loss weighs at least as much (``β_t ≤ 0.5``).
- ``joint``: a fixed mix ``(1 − w) · task + w · contrastive`` (``contrastive_weight``).
- ``two_stage``: phase ``contrastive`` trains the encoder with the contrastive
  loss only; phase ``classifier`` freezes it and trains the linear classifier.

The contrastive loss needs class labels and several bags per step: use it with
a classification task, ``batch_size`` > 1 and, under imbalance, class-balanced
batches (``TrainConfig(balance="batches")``): with 5 % positives and 8 bags a
batch, two batches in three hold no second positive. Anchors with no other bag
of their class in the batch are skipped.

What is checked against the paper: its abstract (arXiv 2303.13405) states a
joint training that progressively transitions from bag representation
learning to classifier learning, for label imbalance, evaluated ID and OOD;
the objective ``β_t · L_SCL + (1 − β_t) · L_CE`` with a decaying ``β_t`` matches
a third-party summary of the paper. Not checked (the paper's method section
was not readable offline): the exact form of ``β_t`` (here BBN's parabola), the
temperature (here 0.1, SupCon's default) and the projection head's shape
(here linear, ReLU, linear to 128-d) are this implementation's choices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mil.models.base import AttentionNet, HeadOutput, MILHead, full_mask, masked_softmax
from mil.models.registry import heads

MODES = ("progressive", "joint", "two_stage")


def transition_weight(epoch: int, epochs: int) -> float:
    """SC-MIL's contrastive weight ``β = 1 − (epoch / epochs)²``: 1 at the start, → 0."""
    return 1.0 - (epoch / epochs) ** 2


def supervised_contrastive_loss(
    z: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """SupCon loss of (B, P) unit vectors; anchors without a positive are skipped."""
    similarity = z @ z.T / temperature
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = similarity - torch.logsumexp(
        similarity.masked_fill(self_pair, -torch.inf), dim=1, keepdim=True
    )
    positive = (labels[:, None] == labels[None, :]) & ~self_pair
    count = positive.sum(dim=1)
    anchors = count > 0
    if not anchors.any():
        return z.sum() * 0.0
    mean_log_prob = (log_prob * positive).sum(dim=1)[anchors] / count[anchors]
    return -mean_log_prob.mean()


@heads.register(
    "scmil",
    description="gated attention + supervised contrastive bag representations, "
    "progressive hand-over to the classifier (or joint / two-stage)",
    paper="Juyal et al. 2024 (SC-MIL, WACV)",
    aux="supervised contrastive",
)
class SCMIL(MILHead):
    """Gated-attention bags trained with a supervised contrastive loss."""

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        proj_dim: int = 128,
        dropout: float = 0.25,
        temperature: float = 0.1,
        mode: str = "progressive",
        contrastive_weight: float = 0.5,
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        if mode not in MODES:
            raise ValueError(f"SC-MIL mode must be one of {MODES}, got {mode!r}")
        if temperature <= 0 or not 0 <= contrastive_weight <= 1:
            raise ValueError("temperature must be > 0 and 0 <= contrastive_weight <= 1")
        self.attention = AttentionNet(hidden_dim, attn_dim, 1, gated=True, dropout=dropout)
        self.projection = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, proj_dim)
        )
        self.classifier = nn.Linear(hidden_dim, n_out)
        self.mode, self.temperature = mode, temperature
        self.contrastive_weight = contrastive_weight
        self.phase = self.phases()[0]
        self.aux_weight = contrastive_weight if mode == "joint" else 1.0
        self.selectable = mode != "progressive"

    def phases(self) -> tuple[str, ...]:
        return ("contrastive", "classifier") if self.mode == "two_stage" else ("train",)

    def set_phase(self, phase: str) -> None:
        super().set_phase(phase)
        self.phase = phase
        frozen = phase == "classifier"
        for module in (self.encoder, self.attention, self.projection):
            module.requires_grad_(not frozen)
        if self.mode == "two_stage":
            self.aux_weight = 0.0 if frozen else 1.0

    def set_progress(self, epoch: int, epochs: int) -> None:
        if self.mode == "progressive":
            self.aux_weight = transition_weight(epoch, epochs)
            self.selectable = self.aux_weight <= 0.5

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        a = masked_softmax(self.attention(h)[..., 0], mask)
        z = torch.einsum("bn,bne->be", a, h)
        aux = None
        if classes is not None and self.training and self.aux_weight > 0:
            projected = F.normalize(self.projection(z), dim=-1)
            aux = supervised_contrastive_loss(projected, classes, self.temperature)
        return HeadOutput(logits=self.classifier(z), scores=a, embedding=z, aux_loss=aux)
