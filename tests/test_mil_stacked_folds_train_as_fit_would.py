"""mil.stacked: the folds of a CV trained in one vectorised loop follow fit() exactly.

Without dropout the stacked loop and ``fit`` run the same arithmetic: the same
batches (each fold's own seed), the same AdamW with each fold's own step count,
the same cosine schedule. So the weights must agree to float precision, also
when folds have different numbers of batches (a fold sits the extra step out)
and short last batches (padded with ignored bags), and with class weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from mil_fixtures import one_torch_thread, witness_table  # noqa: F401 (autouse)

from mil.data import BagTable, read_mil_csv
from mil.errors import MILError
from mil.models import create_head
from mil.splits import KFold
from mil.stacked import fit_stacked
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, evaluate, fit

MIL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mil"
CONFIG = TrainConfig(
    epochs=3, lr=1e-3, weight_decay=1e-2, batch_size=4, patience=None, standardize=True
)


def folds_of(table: BagTable, sizes: list[int]) -> list[BagTable]:
    """Training sets of the given sizes (different sizes: different batch counts)."""
    rng = np.random.default_rng(0)
    return [table.subset(sorted(rng.choice(len(table), n, replace=False))) for n in sizes]


def models(head: str, dim: int, n: int, **options) -> list[MILModel]:
    out = []
    for f in range(n):
        torch.manual_seed(f)
        out.append(MILModel(create_head(head, in_dim=dim, n_out=2, hidden_dim=16, **options)))
    return out


def flat(model: MILModel) -> torch.Tensor:
    """Every weight but the attention logit's bias: softmax ignores a shift, so its gradient
    is 0 up to rounding, which AdamW blows up into lr-sized steps of either sign."""
    return torch.cat([
        p.detach().reshape(-1)
        for name, p in model.named_parameters()
        if name != "head.attention.w.bias"
    ])  # fmt: skip


@pytest.mark.parametrize("head", ["mean", "max", "abmil", "gated_abmil"])
@pytest.mark.parametrize("balance", ["none", "weights"])
def test_stacked_folds_end_with_the_weights_fit_gives_each(head, balance):
    table = witness_table(60, dim=12, instances=(5, 12))
    task = create_task("classification", table.labels)
    # 21 bags: 6 batches, the last of 1 bag; 24: 6 full batches; 18: 5 batches.
    trains = folds_of(table, [21, 24, 18])
    config = dataclasses.replace(CONFIG, balance=balance)
    stacked, alone = models(head, 12, 3, dropout=0.0), models(head, 12, 3, dropout=0.0)
    fit_stacked(stacked, task, trains, config, seeds=[7, 8, 9], align=False)
    for model, train, seed in zip(alone, trains, [7, 8, 9], strict=True):
        fit(model, task, train, None, dataclasses.replace(config, seed=seed))
    for a, b in zip(stacked, alone, strict=True):
        assert not torch.equal(flat(a), flat(models(head, 12, 1, dropout=0.0)[0]))  # trained
        torch.testing.assert_close(flat(a), flat(b), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.mean, b.mean)


def test_a_fold_that_sits_a_step_out_is_not_moved_by_it():
    """Momentum and weight decay must not move a fold on a step it has no batch for."""
    table = witness_table(40, dim=8, instances=(5, 9))
    task = create_task("classification", table.labels)
    short, long = folds_of(table, [4, 20])  # 1 batch against 5
    one = models("abmil", 8, 2, dropout=0.0)
    config = dataclasses.replace(CONFIG, epochs=1)
    results = fit_stacked(one, task, [short, long], config, align=False)
    assert all(np.isfinite(r.history[-1]["train_loss"]) for r in results)
    alone = models("abmil", 8, 1, dropout=0.0)[0]
    fit(alone, task, short, None, dataclasses.replace(CONFIG, epochs=1))
    torch.testing.assert_close(flat(one[0]), flat(alone), rtol=1e-5, atol=1e-6)


def test_on_a_real_classical_set_stacked_cv_learns_as_the_fold_loop_does():
    """Musk1, 10-fold, with dropout: accuracy pooled over folds within a few bags of fit's."""
    table = read_mil_csv(MIL_DATA / "musk1.csv.gz")
    task = create_task("classification", table.labels)
    index = {bag: i for i, bag in enumerate(table.ids)}
    splits = KFold(k=10, seed=0).make(table.ids, table.patients, list(table.labels))
    trains = [table.subset([index[i] for i in f.train]) for f in splits.folds]
    tests = [table.subset([index[i] for i in f.test]) for f in splits.folds]
    config = dataclasses.replace(CONFIG, epochs=20, lr=5e-4, weight_decay=1e-4)
    stacked, alone = models("abmil", table.dim, 10), models("abmil", table.dim, 10)
    fit_stacked(stacked, task, trains, config, seeds=range(10))
    for f, (model, train) in enumerate(zip(alone, trains, strict=True)):
        fit(model, task, train, None, dataclasses.replace(config, seed=f))

    def accuracy(trained: list[MILModel]) -> float:
        right = sum(
            evaluate(m, task, t).metrics["accuracy"] * len(t)
            for m, t in zip(trained, tests, strict=True)
        )
        return right / len(table)

    a, b = accuracy(stacked), accuracy(alone)
    assert a > 0.8 and b > 0.8, (a, b)
    assert abs(a - b) <= 0.06, (a, b)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schedule": "plateau"}, "plateau"),
        ({"instance_dropout": 0.2}, "instance_dropout"),
        ({"balance": "sampler"}, "sampler"),
        ({"accumulate": 2}, "accumulate"),
    ],
)
def test_what_the_stacked_loop_does_not_train_is_refused_by_name(change, named):
    table = witness_table(20, dim=8)
    task = create_task("classification", table.labels)
    config = dataclasses.replace(CONFIG, **change)
    with pytest.raises(MILError, match=named):
        fit_stacked(models("abmil", 8, 2), task, [table, table], config)


@pytest.mark.parametrize("head", ["clam_sb", "dsmil"])
def test_heads_with_their_own_loss_are_refused(head):
    table = witness_table(20, dim=8)
    task = create_task("classification", table.labels)
    with pytest.raises(MILError, match="extra loss"):
        fit_stacked(models(head, 8, 2), task, [table, table], CONFIG)


def test_a_regression_task_is_refused():
    table = BagTable.from_arrays([np.ones((3, 4), np.float32)] * 4, [0.5, 1.0, 2.0, 3.0])
    task = create_task("regression", table.labels)
    with pytest.raises(MILError, match="classification only"):
        fit_stacked(models("abmil", 4, 1), task, [table], CONFIG)


def test_a_head_that_cannot_run_vectorised_is_refused_by_name():
    table = witness_table(20, dim=8)
    task = create_task("classification", table.labels)
    with pytest.raises(MILError, match="TransMIL cannot be trained stacked"):
        fit_stacked(models("transmil", 8, 2), task, [table, table], CONFIG)


def test_aligned_steps_give_each_fold_every_batch_once_with_little_padding():
    """Heavy-tailed sizes (Musk2: 1 to 1,044): aligned steps pad far less than fit's order."""
    from mil.stacked import _aligned, _in_turn
    from mil.train import _epoch_batches

    rng = np.random.default_rng(0)
    sizes = [np.minimum(rng.pareto(1.2, n).astype(int) + 1, 1044) for n in (92, 91, 90)]
    task = create_task("classification", [0, 1])
    batches = [
        _epoch_batches(np.arange(len(s)) % 2, s, task, CONFIG, np.random.default_rng(f))
        for f, s in enumerate(sizes)
    ]
    steps = _aligned(batches, sizes, np.random.default_rng(1))
    for f, own in enumerate(batches):
        seen = [step[f] for step in steps if step[f] is not None]
        assert sorted(map(tuple, seen)) == sorted(map(tuple, own))

    def padded_rows(plan) -> int:  # each step pads every fold to its longest bag
        longest = [[int(sizes[f][b].max()) for f, b in enumerate(s) if b is not None] for s in plan]
        return sum(max(rows) for rows in longest)

    assert padded_rows(steps) < 0.75 * padded_rows(_in_turn(batches))  # measured: 0.60
