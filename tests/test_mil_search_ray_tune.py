"""A tiny Ray Tune search: every (configuration, fold) pair runs, ranked on validation bags."""

from __future__ import annotations

import pytest
from mil_fixtures import one_torch_thread, witness_table  # noqa: F401 (autouse)

import mil


@pytest.mark.integration
def test_tiny_search_ranks_configurations_across_folds(tmp_path, ray_session):
    experiment = mil.Experiment(
        witness_table(36, shift=2.5),
        project=tmp_path,
        model="abmil",
        model_kwargs={"hidden_dim": 16},
        splits=mil.KFold(k=2, val_fraction=0.25),
        train=mil.TrainConfig(epochs=3, batch_size=4, patience=None),
        name="search",
    )
    result = mil.search(experiment, {"lr": [1e-6, 3e-3]}, n_trials=2, metric="auroc", seed=0)
    table = result.table
    assert sorted(table["lr"]) == [1e-6, 3e-3]  # a grid: none twice (seed 0 drew 3e-3 twice)
    assert set(table.columns) >= {"lr", "mean", "std", "fold-0", "fold-1"}
    assert table[["fold-0", "fold-1"]].notna().all().all()
    assert table["mean"].is_monotonic_decreasing  # auroc: best first
    assert (tmp_path / "runs" / "search" / "search.csv").is_file()
    for fold in ("fold-0", "fold-1"):  # nested: each fold's own best validation score
        chosen = table[table["lr"] == result.best_per_fold[fold]["lr"]]
        assert set(result.best_per_fold[fold]) == {"lr"}
        assert chosen[fold].max() == table[fold].max()
    with pytest.raises(mil.MILError, match="no validation bags"):
        mil.search(
            mil.Experiment(witness_table(12), project=tmp_path, splits=mil.KFold(k=2)),
            {"lr": [1e-3]},
        )
