"""Contract over the MIL head registry: shapes, masking, and learning a witness task.

Every registered head is tested here automatically: a new head only has to
register itself. Positive bags hide a few shifted "witness" instances among
noise; each head must rank held-out bags far better than chance.
"""

from __future__ import annotations

import pytest
import torch
from mil_fixtures import one_torch_thread, witness_table  # noqa: F401 (autouse)

from mil.models import create_head, heads, list_heads
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, evaluate, fit

NAMES = heads.names()
# Small widths keep every head to a few seconds on two cores; TransMIL's
# landmarks above the bag size use exact attention (Nyström is tested below).
SMALL = {"hidden_dim": 32}
OPTIONS = {"transmil": {"hidden_dim": 32, "heads": 4, "landmarks": 128}}
# (training bags, epochs): the same 640 bag-steps for every head; the transformer
# memorises 80 bags, so it sees twice the bags for half the epochs.
BUDGET = {"transmil": (160, 4)}


def test_registry_lists_every_head_of_the_brief():
    assert {
        "mean", "max", "abmil", "gated_abmil", "clam_sb", "clam_mb", "transmil", "dsmil", "scmil"
    } <= set(NAMES)  # fmt: skip
    rows = {r["name"]: r for r in list_heads()}
    assert all(rows[n]["available"] and rows[n]["description"] for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n_out", [1, 3])
def test_head_output_contract(name, n_out):
    torch.manual_seed(0)
    head = create_head(name, in_dim=16, n_out=n_out, **OPTIONS.get(name, SMALL)).train()
    x = torch.randn(3, 20, 16)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 12:] = False
    out = head(x, mask, torch.tensor([0, 0, 0]) if n_out == 3 else None)
    assert out.logits.shape == (3, n_out)
    assert out.scores.shape[:2] == (3, 20) and out.scores.dim() in (2, 3)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.scores).all()
    assert (out.scores[1, 12:] == 0).all(), "padded instances must score exactly 0"
    loss = out.logits.sum() + (out.aux_loss if out.aux_loss is not None else 0)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_a_bag_output(name):
    torch.manual_seed(0)
    head = create_head(name, in_dim=16, n_out=2, **OPTIONS.get(name, SMALL)).eval()
    short, long = torch.randn(1, 9, 16), torch.randn(1, 25, 16)
    alone = head(short)
    batch = torch.zeros(2, 25, 16)
    batch[0, :9], batch[1] = short[0], long[0]
    mask = torch.zeros(2, 25, dtype=torch.bool)
    mask[0, :9], mask[1] = True, True
    padded = head(batch, mask)
    torch.testing.assert_close(padded.logits[0], alone.logits[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded.scores[0, :9], alone.scores[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_head_learns_witness_bags_far_above_chance(name):
    n_train, epochs = BUDGET.get(name, (80, 8))
    train, test = witness_table(n_train, shift=2.0, seed=1), witness_table(60, shift=2.0, seed=2)
    task = create_task("classification", train.labels)
    torch.manual_seed(0)
    model = MILModel(create_head(name, in_dim=train.dim, n_out=2, **OPTIONS.get(name, SMALL)))
    config = TrainConfig(epochs=epochs, lr=2e-3, batch_size=8, patience=None, schedule="constant")
    fit(model, task, train, None, config)
    assert evaluate(model, task, test).metrics["auroc"] > 0.85


def test_transmil_nystrom_layers_match_exact_attention_shape_and_pinv():
    from mil.models.transmil import iterative_pinv

    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 16, 16), dim=-1)
    torch.testing.assert_close(
        iterative_pinv(a, iters=20) @ a, torch.eye(16).expand(2, 16, 16), atol=1e-3, rtol=0
    )
    head = create_head("transmil", in_dim=8, n_out=2, hidden_dim=16, heads=2, landmarks=8).eval()
    out = head(torch.randn(1, 150, 8))  # 150 tokens > 8 landmarks: the Nyström path
    assert out.scores.shape == (1, 150) and torch.isfinite(out.scores).all()
