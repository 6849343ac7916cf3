"""SC-MIL as published: one training whose loss moves from contrastive to classifier.

The contrastive weight follows ``β_t = 1 − (t/T)²`` epoch by epoch (recorded in
the history), early stopping and best-weight selection ignore the epochs where
the contrastive loss still dominates, and the head learns witness bags when
positives are the minority (20 % of training bags).
"""

from __future__ import annotations

import numpy as np
import torch
from mil_fixtures import one_torch_thread, witness_bags  # noqa: F401 (autouse)

from mil.data import BagTable
from mil.metrics import auroc
from mil.models import create_head
from mil.models.scmil import transition_weight
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, fit, predict_bags


def test_the_weight_falls_from_one_along_a_parabola():
    weights = [transition_weight(t, 10) for t in range(10)]
    assert weights[0] == 1.0
    assert np.all(np.diff(weights) < 0)
    assert np.isclose(weights[5], 0.75) and np.isclose(weights[9], 0.19)


def _imbalanced(n: int, minority: float, seed: int) -> BagTable:
    bags, labels, _ = witness_bags(4 * n, dim=16, shift=2.5, seed=seed)
    negatives = np.flatnonzero(labels == 0)[: round(n * (1 - minority))]
    positives = np.flatnonzero(labels == 1)[: round(n * minority)]
    keep = np.concatenate([negatives, positives])
    return BagTable.from_arrays([bags[i] for i in keep], labels[keep].tolist())


def test_progressive_training_follows_the_schedule_and_learns_a_minority_class():
    train, val = _imbalanced(100, 0.2, seed=1), _imbalanced(40, 0.2, seed=2)
    test = _imbalanced(60, 0.5, seed=3)
    task = create_task("classification", train.labels)
    torch.manual_seed(0)
    head = create_head("scmil", in_dim=train.dim, n_out=2, hidden_dim=32)
    assert head.mode == "progressive"
    epochs = 12
    config = TrainConfig(epochs=epochs, lr=2e-3, batch_size=16, patience=3, standardize=True)
    model = MILModel(head)
    result = fit(model, task, train, val, config)
    assert {r["phase"] for r in result.history} == {"train"}
    weights = [r["aux_weight"] for r in result.history]
    expected = [transition_weight(t, epochs) for t in range(len(weights))]
    assert np.allclose(weights, expected), (weights, expected)
    first_selectable = next(t for t in range(epochs) if transition_weight(t, epochs) <= 0.5)
    assert len(result.history) > first_selectable  # no stop while the contrastive loss leads
    assert result.best_epoch >= first_selectable
    predictions, _, _ = predict_bags(model, task, test)
    assert auroc(np.asarray(test.labels) == 1, predictions[:, 1]) > 0.85
