"""What every MIL head shares: its output record, the base class and masked pooling.

A head takes a padded batch of bags ``x`` (B, N, D) with ``mask`` (B, N)
marking real instances, and returns a :class:`HeadOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


@dataclass(frozen=True, kw_only=True)
class HeadOutput:
    """The result of one forward pass of a MIL head.

    Attributes
    ----------
    logits
        (B, n_out) bag-level outputs.
    scores
        (B, N) per-instance attention or scores, or (B, N, K) with one column per
        output (class-wise attention, instance logits). Padded rows are 0.
    embedding
        (B, E) bag representation before the last layer, when the head has one.
    aux_logits
        (B, n_out) a second bag-level prediction trained with the task loss (DSMIL's
        max-instance stream), weighted by the head's ``aux_weight``.
    aux_loss
        A head-specific auxiliary loss (CLAM's instance clustering, SC-MIL's
        supervised contrastive loss), weighted by ``aux_weight``.
    """

    logits: torch.Tensor
    scores: torch.Tensor
    embedding: torch.Tensor | None = None
    aux_logits: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


class InputLinear(nn.Linear):
    """A head's first layer, with the feature standardisation folded into its weights.

    ``W·((x − μ)/σ) + b`` equals ``(W/σ)·x + (b − (W/σ)·μ)``: the (out, in)
    weights are rescaled each call instead of the (B, N, in) input, so a
    standardised head costs one small matrix operation per step and none per
    instance, and gradients are those of the standardised layer. ``mean`` and
    ``std`` are buffers (0 and 1 until the trainer fits them). An input with
    fewer values than the weights (a step of a few small bags: Musk, Fox, Tiger)
    is standardised itself instead, which costs less and leaves no rescaling
    for the backward pass (a classical set's step about 10 % faster).

    Under autocast the input is standardised first (one fused pass) and the
    product runs on the standardised values: in bfloat16 or float16 the folded
    form would cancel ``(W/σ)·x`` against ``(W/σ)·μ`` and lose the differences
    standardisation measures (raw features sit up to 10⁵ σ from 0 in Fox).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(in_dim, out_dim)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            scale = self.std.reciprocal()
            x = torch.addcmul(-self.mean * scale, x.float(), scale)
            return F.linear(x, self.weight, self.bias)
        if x.numel() <= self.weight.numel():
            return F.linear((x - self.mean) / self.std, self.weight, self.bias)
        weight = self.weight / self.std
        return F.linear(x, weight, torch.addmv(self.bias, weight, self.mean, alpha=-1))


class Dropout(nn.Module):
    """Inverted dropout whose CPU mask costs one random byte per element.

    ``torch.nn.Dropout`` on the CPU draws one random float per element, which on
    small MIL heads costs more than the layers around it; here eight mask bytes
    come from each 64-bit random number (``p`` is rounded to a multiple of
    1/256). On other devices it is ``torch.nn.functional.dropout``.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, ((n + 7) // 8,), dtype=torch.int64)
        keep = bits.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        return x * keep.to(x.dtype).mul_(256 / (256 - self.threshold))

    def extra_repr(self) -> str:
        return f"p={self.threshold / 256:g}"


class MILHead(nn.Module):
    """Base of the heads: an instance encoder (linear, ReLU, dropout) and the options.

    Parameters
    ----------
    in_dim
        Feature dimension D of the instances.
    n_out
        Number of outputs (classes, 1 for regression or Cox, time bins).
    hidden_dim
        Width of the instance encoder (of its last layer).
    dropout
        Dropout after each encoder layer and inside attention.
    encoder_layers
        Layers of the instance encoder (linear, ReLU, dropout each), halving in
        width down to ``hidden_dim``: 2 gives ``D → 2·hidden_dim → hidden_dim``.
        Classical MIL sets differ on it (Tiger gains from 2, Fox loses; see
        ``benchmarks/mil_classic.py --encoder-layers``).
    """

    aux_weight: float = 0.0
    #: Whether this epoch's validation may stop training or pick the best weights
    #: (false while a head's loss schedule has not yet handed over to the task loss).
    selectable: bool = True
    #: Whether a head that can run a padded batch on its real rows only (ABMIL) does so;
    #: off where data-dependent row indexing cannot run (``torch.func.vmap``, ``mil.stacked``).
    pack_rows: bool = True

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        dropout: float = 0.25,
        encoder_layers: int = 1,
    ):
        super().__init__()
        if min(in_dim, n_out, hidden_dim, encoder_layers) < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"{type(self).__name__}: in_dim, n_out, hidden_dim and encoder_layers must be "
                f"positive and 0 <= dropout < 1 (got {in_dim}, {n_out}, {hidden_dim}, "
                f"{encoder_layers}, {dropout})"
            )
        self.in_dim, self.n_out, self.hidden_dim = in_dim, n_out, hidden_dim
        widths = [hidden_dim * 2 ** (encoder_layers - 1 - i) for i in range(encoder_layers)]
        layers: list[nn.Module] = [InputLinear(in_dim, widths[0]), nn.ReLU(), Dropout(dropout)]
        for before, width in pairwise(widths):
            layers += [nn.Linear(before, width), nn.ReLU(), Dropout(dropout)]
        self.encoder = nn.Sequential(*layers)

    def phases(self) -> tuple[str, ...]:
        """Training phases run one after another (most heads have one)."""
        return ("train",)

    def set_phase(self, phase: str) -> None:
        """Switch to training phase ``phase`` (see :meth:`phases`)."""
        if phase not in self.phases():
            raise ValueError(f"{type(self).__name__} has no phase {phase!r}")

    def set_progress(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch of a phase (``0 <= epoch < epochs``).

        Heads whose loss follows a schedule (SC-MIL's transition) update it here.
        """

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        """Score a batch of bags.

        Parameters
        ----------
        x
            (B, N, D) instance features (padded).
        mask
            (B, N) true for real instances; ``None`` when nothing is padded.
        classes
            (B,) class indices during training of a classification task, for heads
            with an auxiliary loss; ``None`` otherwise.
        """
        raise NotImplementedError


def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``mask``, or all-true of shape (B, N) when there is none."""
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over instances (dim 1) of (B, N[, K]) logits, padded rows exactly 0."""
    if logits.dim() == 3:
        mask = mask[..., None]
    weights = torch.softmax(logits.masked_fill(~mask, -torch.inf), dim=1)
    return weights.masked_fill(~mask, 0.0)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real instances of (B, N, E) → (B, E)."""
    weights = mask.to(h.dtype)[..., None]
    return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class AttentionNet(nn.Module):
    """Attention logits (B, N, K) of Ilse et al.: wᵀ tanh(V h), or gated wᵀ(tanh(V h) ⊙ σ(U h))."""

    def __init__(self, dim: int, attn_dim: int, n_branches: int, *, gated: bool, dropout: float):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), Dropout(dropout))
        self.u = (
            nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), Dropout(dropout))
            if gated
            else None
        )
        self.w = nn.Linear(attn_dim, n_branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.v(h)
        if self.u is not None:
            a = a * self.u(h)
        return self.w(a)
