"""Trainer options: seeds repeat, accumulation equals a bigger batch, huge bags stay bounded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mil_fixtures import one_torch_thread, witness_table  # noqa: F401 (autouse)

from mil.data import BagTable
from mil.errors import MILError
from mil.models import create_head
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, fit


def train_once(config: TrainConfig, table: BagTable, name: str = "abmil", **kw) -> MILModel:
    task = create_task("classification", table.labels)
    torch.manual_seed(0)
    model = MILModel(create_head(name, in_dim=table.dim, n_out=2, hidden_dim=16, dropout=0.0, **kw))
    fit(model, task, table, None, config)
    return model


def weights(model: MILModel) -> torch.Tensor:  # all parameters, flat
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_weights_other_seed_other_weights():
    table = witness_table(24)
    config = TrainConfig(epochs=2, batch_size=4, instance_dropout=0.2, seed=5)
    a, b = train_once(config, table), train_once(config, table)
    assert torch.equal(weights(a), weights(b))
    c = train_once(dataclasses.replace(config, seed=6), table)
    assert not torch.equal(weights(a), weights(c))


def test_gradient_accumulation_matches_one_larger_batch():
    # equal-size bags, so a padded batch of 4 is exactly four bags of one
    rng = np.random.default_rng(0)
    labels = [1, 1, 1, 0]  # one optimiser step: four bags at once vs four accumulated
    table = BagTable.from_arrays([rng.normal(size=(12, 8)) for _ in range(4)], labels)
    base = {"epochs": 1, "schedule": "constant", "lr": 1e-2, "patience": None}
    big = train_once(TrainConfig(batch_size=4, **base), table)
    accumulated = train_once(TrainConfig(batch_size=1, accumulate=4, **base), table)
    # The attention logit bias has a true gradient of 0 (softmax ignores a shift), where
    # Adam turns float rounding into full steps: compare every other parameter.
    for (name, a), b in zip(big.named_parameters(), accumulated.parameters(), strict=True):
        if name != "head.attention.w.bias":
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


class CountingBags(BagTable):
    """Records the largest number of rows read from any bag."""

    largest: list[int] = []  # noqa: RUF012

    def features(self, i, rows=None):
        out = super().features(i, rows)
        CountingBags.largest.append(len(out))
        return out


def test_huge_bags_are_subsampled_to_max_instances():
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(20_000, 4)).astype(np.float32) for _ in range(2)]
    table = CountingBags(bags=tuple(bags), labels=(0, 1), ids=("a", "b"))
    CountingBags.largest = []
    train_once(TrainConfig(epochs=2, max_instances=256, patience=None), table)
    assert CountingBags.largest and max(CountingBags.largest) == 256


def test_balancing_options_and_invalid_configs():
    table = witness_table(30)
    for balance in ("weights", "sampler"):
        train_once(TrainConfig(epochs=1, balance=balance, batch_size=4), table)
    for bad in ({"epochs": 0}, {"schedule": "linear"}, {"balance": "smote"}, {"min_epochs": 9}):
        with pytest.raises(ValueError, match="invalid TrainConfig"):
            TrainConfig(**{"epochs": 5, **bad})


def test_scmil_two_stage_freezes_the_encoder_for_the_classifier_phase():
    table = witness_table(24)
    task = create_task("classification", table.labels)
    torch.manual_seed(0)
    head = create_head("scmil", in_dim=table.dim, n_out=2, hidden_dim=16, mode="two_stage")
    model = MILModel(head)
    result = fit(model, task, table, None, TrainConfig(epochs=2, batch_size=8, patience=None))
    assert [r["phase"] for r in result.history] == ["contrastive"] * 2 + ["classifier"] * 2
    assert not any(p.requires_grad for p in head.encoder.parameters())
    with pytest.raises(MILError, match="needs a classification task"):
        fit(model, create_task("regression", [0.0, 1.0]), table, None, TrainConfig(epochs=1))
