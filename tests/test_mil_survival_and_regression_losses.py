"""Task losses on hand-made cases: Cox partial likelihood, discrete-time NLL, regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mil_fixtures import one_torch_thread  # noqa: F401 (autouse)

from mil.errors import MILError
from mil.tasks import cox_loss, create_task, discrete_survival_nll, task_from_dict


def test_cox_loss_matches_the_partial_likelihood_by_hand():
    risk = torch.tensor([1.0, 0.0, 2.0])
    time = torch.tensor([1.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 0.0])
    # event at t=1: risk set all three; event at t=2: {1, 2}; the censored one adds no term
    first = 1.0 - math.log(math.e**1 + math.e**0 + math.e**2)
    second = 0.0 - math.log(math.e**0 + math.e**2)
    assert float(cox_loss(risk, time, event)) == pytest.approx(-(first + second) / 2, rel=1e-6)


def test_cox_loss_ties_share_the_risk_set_and_no_event_is_zero():
    risk = torch.tensor([0.5, -0.5])
    tied = cox_loss(risk, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]))
    expected = -((0.5 + -0.5) - 2 * math.log(math.e**0.5 + math.e**-0.5)) / 2
    assert float(tied) == pytest.approx(expected, rel=1e-6)
    assert float(cox_loss(risk, torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))) == 0.0


def test_discrete_nll_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # every hazard ½
    bins = torch.tensor([1, 1])
    event = torch.tensor([1.0, 0.0])
    # event in bin 1: −log(S0 · h1) = −log(½·½); censored in bin 1: −log S1 = −log(¼)
    expected = (-math.log(0.25) - math.log(0.25)) / 2
    assert float(discrete_survival_nll(logits, bins, event)) == pytest.approx(expected)


def test_discrete_task_bins_times_and_ranks_risk():
    labels = [(1.0, 1), (2.0, 1), (3.0, 0), (4.0, 1), (5.0, 1)]
    task = create_task("survival_discrete", labels, n_bins=2)
    targets = task.encode(labels)
    assert task.n_out == 2 and targets[:, 2].tolist() == [0, 0, 1, 1, 1]
    high_hazard = task.predict(torch.tensor([[3.0, 3.0]]))
    low_hazard = task.predict(torch.tensor([[-3.0, -3.0]]))
    assert high_hazard[0, 0] > low_hazard[0, 0]
    assert task_from_dict(task.describe()) == task


def test_survival_labels_are_checked():
    with pytest.raises(MILError, match="time >= 0, event 0/1"):
        create_task("survival_cox", [(1.0, 2)]).encode([(1.0, 2)])


def test_regression_loss_is_mse_and_classification_rejects_unknown_labels():
    task = create_task("regression", [1.0, 2.0])
    loss = task.loss(torch.tensor([[1.0], [4.0]]), torch.tensor([1.0, 2.0]))
    assert float(loss) == pytest.approx(2.0)
    classes = create_task("classification", ["LUAD", "LUSC", "LUAD"])
    assert classes.classes == ("LUAD", "LUSC")
    assert classes.encode(["LUSC", "LUAD"]).tolist() == [1, 0]
    with pytest.raises(MILError, match="not among the classes"):
        classes.encode(["NORMAL"])
    with pytest.raises(MILError, match="at least two classes"):
        create_task("classification", ["A", "A"])


def test_cox_and_regression_heads_train_through_the_shared_trainer():
    from mil.data import BagTable
    from mil.models import create_head
    from mil.train import MILModel, TrainConfig, evaluate, fit

    rng = np.random.default_rng(0)
    bags, labels = [], []
    for _ in range(60):
        hazard = rng.normal()
        x = rng.normal(size=(10, 8)).astype(np.float32)
        x[:, 0] += hazard
        bags.append(x)
        labels.append((float(rng.exponential(np.exp(-2 * hazard))), int(rng.random() < 0.8)))
    table = BagTable.from_arrays(bags, labels)
    torch.manual_seed(0)
    for name in ("survival_cox", "survival_discrete"):
        task = create_task(name, labels)
        model = MILModel(create_head("abmil", in_dim=8, n_out=task.n_out, hidden_dim=16))
        config = TrainConfig(epochs=20, lr=3e-3, batch_size=8, patience=None)
        fit(model, task, table, None, config)
        assert evaluate(model, task, table).metrics["c_index"] > 0.7, name
