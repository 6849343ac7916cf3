"""Every head takes encoder_layers: a deeper instance encoder halving in width to hidden_dim."""

from __future__ import annotations

import pytest
import torch
from mil_fixtures import one_torch_thread  # noqa: F401 (autouse)

from mil.models import create_head, list_heads
from mil.train import MILModel


@pytest.mark.parametrize("name", [h["name"] for h in list_heads()])
def test_every_head_builds_and_runs_with_a_deeper_encoder(name):
    head = create_head(name, in_dim=10, n_out=2, hidden_dim=8, encoder_layers=3)
    linears = [m for m in head.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 32), (32, 16), (16, 8)]
    model = MILModel(head).eval()
    assert model.mean.shape == (10,)  # the standardisation stays on the first layer
    out = model(torch.randn(2, 5, 10), torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()


def test_one_layer_is_the_default_and_zero_is_refused():
    head = create_head("abmil", in_dim=10, n_out=2, hidden_dim=8)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.encoder) == 1
    with pytest.raises(ValueError, match="encoder_layers"):
        create_head("abmil", in_dim=10, n_out=2, hidden_dim=8, encoder_layers=0)
