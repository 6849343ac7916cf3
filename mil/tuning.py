"""Hyperparameter search with Ray Tune: every (configuration, fold) pair is one trial.

Configurations are drawn once (seeded) from the search space, then Ray Tune
runs each configuration on every fold in parallel, training on the fold's
training bags and scoring its validation bags; test bags are never looked
at. The result ranks configurations by their mean validation metric.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mil.data import BagSource
from mil.errors import MILError
from mil.experiment import Experiment
from mil.models import heads
from mil.splits import Splits
from mil.tasks import Task
from mil.train import LOWER_IS_BETTER, MILModel, TrainConfig, evaluate, fit
from slideflow_core.ray_runtime import ensure_ray

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class SearchResult:
    """Configurations ranked by mean validation metric (best first).

    Attributes
    ----------
    table
        One row per configuration: its parameters, ``mean``, ``std`` and one
        column per fold.
    best
        Parameters of the best configuration.
    metric
        The validation metric.
    best_per_fold
        Fold name → parameters of the best configuration on that fold's own
        validation bags: nested selection, for testing each fold's test bags
        with settings chosen without them (``best`` is chosen on every fold's
        validation bags, some of which are other folds' test bags).
    """

    table: pd.DataFrame
    best: dict[str, Any]
    metric: str
    best_per_fold: dict[str, dict[str, Any]]


def _draw(space: Mapping[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` configurations: a value per key, chosen from a list or sampled from a Tune domain.

    A space of lists only is a finite grid: ``n`` distinct points of it are drawn
    (all of them, in random order, when it has ``n`` or fewer), never one twice.
    """
    rng = np.random.default_rng(seed)
    if not any(hasattr(domain, "sample") for domain in space.values()):
        grid = list(itertools.product(*(list(domain) for domain in space.values())))
        return [dict(zip(space, grid[i], strict=True)) for i in rng.permutation(len(grid))[:n]]
    configs = []
    for _ in range(n):
        config = {}
        for key, domain in space.items():
            if hasattr(domain, "sample"):
                value = domain.sample(random_state=int(rng.integers(2**31)))
                config[key] = value.item() if hasattr(value, "item") else value
            else:
                options = list(domain)
                config[key] = options[int(rng.integers(len(options)))]
        configs.append(config)
    return configs


def _split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    train = {k: v for k, v in params.items() if k in _TRAIN_FIELDS}
    return train, {k: v for k, v in params.items() if k not in _TRAIN_FIELDS}


def _trial(
    config: dict[str, Any],
    *,
    source: BagSource,
    task: Task,
    splits: Splits,
    params: list[dict[str, Any]],
    model: str,
    model_kwargs: dict[str, Any],
    train: TrainConfig,
    metric: str,
) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    fold = splits.folds[config["fold"]]
    train_params, head_params = _split_params(params[config["trial"]])
    train_config = dataclasses.replace(train, **train_params, progress=False)
    index = {bag: i for i, bag in enumerate(source.ids)}
    torch.manual_seed(train_config.seed)
    head = heads.get(model)(source.dim, task.n_out, **{**model_kwargs, **head_params})
    net = MILModel(head)
    val = source.subset([index[i] for i in fold.val])
    fit(net, task, source.subset([index[i] for i in fold.train]), val, train_config)
    evaluation = evaluate(net, task, val)
    value = evaluation.loss if metric == "loss" else evaluation.metrics.get(metric, np.nan)
    return {metric: float(value)}


def search(
    experiment: Experiment,
    space: Mapping[str, Sequence[Any] | Any],
    *,
    n_trials: int = 8,
    metric: str = "loss",
    seed: int = 0,
    address: str | None = None,
    max_concurrent: int | None = None,
) -> SearchResult:
    """Search hyperparameters of ``experiment`` on its folds' validation bags with Ray Tune.

    Parameters
    ----------
    experiment
        An experiment (not yet run) whose splits have validation bags, e.g.
        ``KFold(k=5, val_fraction=0.2)``.
    space
        Parameter → list of choices or a Ray Tune domain (``tune.loguniform(1e-5, 1e-3)``).
        :class:`~mil.TrainConfig` fields (``lr``, ``weight_decay``, ``epochs``…) go to
        the trainer, anything else to the head (``hidden_dim``, ``dropout``…).
    n_trials
        Configurations to draw; each runs on every fold. From a space of lists
        only, distinct ones (at most the grid's size).
    metric
        Validation metric to rank by (``"loss"``, ``"auroc"``, ``"c_index"``…).
    seed
        Seed of the draws.
    address
        Ray cluster address; default: this process's Ray or a new local one.
    max_concurrent
        Cap on trials running at once (default: as many as Ray has CPUs).

    Raises
    ------
    MILError
        If a fold has no validation bags.
    """
    from ray import tune

    source, task, splits = experiment.prepare()
    empty = [f.name for f in splits.folds if not f.val]
    if empty:
        raise MILError(
            f"folds {empty} have no validation bags to search on",
            hint="use splits with val_fraction > 0, e.g. KFold(k=5, val_fraction=0.2)",
        )
    ensure_ray(address)
    params = _draw(space, n_trials, seed)
    config = experiment.config
    trainable = tune.with_parameters(
        _trial,
        source=source,
        task=task,
        splits=splits,
        params=params,
        model=config.model,
        model_kwargs=config.model_kwargs,
        train=config.train,
        metric=metric,
    )
    lower = metric in LOWER_IS_BETTER
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={
            "trial": tune.grid_search(list(range(n_trials))),
            "fold": tune.grid_search(list(range(len(splits.folds)))),
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            storage_path=str((experiment.run_dir / "tune").absolute()), name="search", verbose=0
        ),
    )
    frame = tuner.fit().get_dataframe()
    if metric not in frame:
        raise MILError(f"no trial reported {metric!r}; see {experiment.run_dir / 'tune'}")
    scores = frame.pivot_table(index="config/trial", columns="config/fold", values=metric)
    scores.columns = [splits.folds[int(c)].name for c in scores.columns]
    table = pd.DataFrame(params).loc[scores.index]
    table["mean"] = scores.mean(axis=1)
    table["std"] = scores.std(axis=1)
    table = pd.concat([table, scores], axis=1).sort_values("mean", ascending=lower)
    table.to_csv(experiment.run_dir / "search.csv", index_label="trial")
    best = {k: table.iloc[0][k] for k in params[0]} if params else {}
    per_fold = {
        fold: params[int(scores[fold].idxmin() if lower else scores[fold].idxmax())]
        for fold in scores.columns
    }
    return SearchResult(
        table=table.reset_index(drop=True), best=best, metric=metric, best_per_fold=per_fold
    )
