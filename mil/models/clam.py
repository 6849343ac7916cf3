"""CLAM single- and multi-branch (Lu et al. 2021): gated attention + instance clustering.

Training adds an instance-level loss: for the bag's class, the ``k_sample``
most attended instances are pseudo-labelled positive and the ``k_sample``
least attended negative, and per-class instance classifiers learn them; for
subtyping problems (more than two classes) the most attended instances of the
other classes' branches are pseudo-labelled negative. The trainer weighs it
0.7 · bag loss + 0.3 · instance loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mil.models.base import AttentionNet, HeadOutput, MILHead, full_mask, masked_softmax
from mil.models.registry import heads


def _gather(h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, k) of (B, N, E) → (B, k, E)."""
    return torch.gather(h, 1, index[..., None].expand(-1, -1, h.shape[-1]))


@heads.register(
    "clam_sb",
    description="gated attention, one branch, instance clustering loss",
    paper="Lu et al. 2021",
    aux="instance clustering (0.3)",
)
class CLAMSB(MILHead):
    """CLAM with one attention branch shared by all classes."""

    aux_weight = 0.3
    multi_branch = False

    def __init__(
        self,
        in_dim: int,
        n_out: int,
        *,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
        k_sample: int = 8,
        subtyping: bool | None = None,
        encoder_layers: int = 1,
    ):
        super().__init__(
            in_dim, n_out, hidden_dim=hidden_dim, dropout=dropout, encoder_layers=encoder_layers
        )
        if k_sample < 1:
            raise ValueError(f"k_sample must be positive, got {k_sample}")
        branches = n_out if self.multi_branch else 1
        self.attention = AttentionNet(hidden_dim, attn_dim, branches, gated=True, dropout=dropout)
        # One bag classifier per branch: branch c pools the evidence for output c.
        self.bag_weight = nn.Parameter(
            torch.empty(branches, n_out if branches == 1 else 1, hidden_dim)
        )
        self.bag_bias = nn.Parameter(torch.zeros(n_out))
        nn.init.xavier_uniform_(self.bag_weight)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden_dim, 2) for _ in range(n_out))
        self.k_sample = k_sample
        self.subtyping = n_out > 2 if subtyping is None else subtyping

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> HeadOutput:
        mask = full_mask(x, mask)
        h = self.encoder(x)
        a = masked_softmax(self.attention(h), mask)  # (B, N, branches)
        z = torch.einsum("bnk,bne->bke", a, h)  # (B, branches, E)
        logits = torch.einsum("bke,kce->bkc", z, self.bag_weight).flatten(1) + self.bag_bias
        aux = None
        if classes is not None and self.training:
            aux = self._instance_loss(h, a, mask, classes)
        scores = a if self.multi_branch and a.shape[-1] > 1 else a[..., 0]
        return HeadOutput(logits=logits, scores=scores, embedding=z.mean(dim=1), aux_loss=aux)

    def _instance_loss(
        self, h: torch.Tensor, a: torch.Tensor, mask: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor | None:
        k = min(self.k_sample, int(mask.sum(dim=1).min()) // 2)
        if k < 1:
            return None
        logits, targets = [], []
        for c, classifier in enumerate(self.instance_classifiers):
            branch = a[..., c if self.multi_branch else 0]
            top = branch.masked_fill(~mask, -torch.inf).topk(k, dim=1).indices
            bottom = branch.masked_fill(~mask, torch.inf).topk(k, dim=1, largest=False).indices
            own = classes == c
            if own.any():
                logits += [
                    classifier(_gather(h[own], top[own])),
                    classifier(_gather(h[own], bottom[own])),
                ]
                targets += [torch.ones_like(top[own]), torch.zeros_like(bottom[own])]
            if self.subtyping and (~own).any():
                logits.append(classifier(_gather(h[~own], top[~own])))
                targets.append(torch.zeros_like(top[~own]))
        return F.cross_entropy(
            torch.cat([t.reshape(-1, 2) for t in logits]),
            torch.cat([t.reshape(-1) for t in targets]),
        )


@heads.register(
    "clam_mb",
    description="gated attention, one branch per class, instance clustering loss",
    paper="Lu et al. 2021",
    aux="instance clustering (0.3)",
)
class CLAMMB(CLAMSB):
    """CLAM with one attention branch (and bag classifier) per class."""

    multi_branch = True
