"""Class-balanced batches: every batch holds each class equally, the minority cycled through."""

from __future__ import annotations

import numpy as np
import torch
from mil_fixtures import one_torch_thread  # noqa: F401 (autouse)

from mil.data import BagTable
from mil.models import create_head
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, _epoch_batches, fit


def test_each_batch_is_half_minority_and_the_majority_is_seen_once():
    targets = np.array([1] * 5 + [0] * 95)  # 5 % minority
    task = create_task("classification", [0, 1])
    config = TrainConfig(batch_size=8, balance="batches")
    batches = _epoch_batches(targets, np.full(100, 10), task, config, np.random.default_rng(0))
    assert len(batches) == 13  # ceil(100 / 8)
    for batch in batches:
        assert len(batch) == 8 and targets[batch].sum() == 4
    majority = [i for batch in batches for i in batch if targets[i] == 0]
    assert len(set(majority)) == len(majority) == 52  # no majority bag twice in an epoch
    minority = [i for batch in batches for i in batch if targets[i] == 1]
    assert sorted(set(minority)) == [0, 1, 2, 3, 4]  # all used, each 10 or 11 times
    assert max(minority.count(i) for i in range(5)) - min(minority.count(i) for i in range(5)) <= 1


def test_scmil_gets_contrastive_partners_on_every_step_at_5_percent_minority():
    rng = np.random.default_rng(0)
    labels = [1] * 3 + [0] * 57
    bags = [rng.standard_normal((int(rng.integers(5, 20)), 6)).astype(np.float32) for _ in labels]
    table = BagTable.from_arrays(bags, labels)
    task = create_task("classification", [0, 1])
    model = MILModel(create_head("scmil", in_dim=6, n_out=2, hidden_dim=8, attn_dim=4))
    seen = []
    model.register_forward_hook(lambda _m, args, out: seen.append((args[2], out.aux_loss)))
    config = TrainConfig(epochs=2, batch_size=8, patience=None, balance="batches")
    fit(model, task, table, None, config)
    assert len(seen) == 2 * 8  # two epochs of ceil(60 / 8) batches
    for classes, loss in seen:  # every anchor has a same-class partner: a real contrastive loss
        assert torch.bincount(classes, minlength=2).tolist() == [4, 4]
        assert loss is not None and torch.isfinite(loss) and loss > 0
