"""Classical MIL with hyper-parameters tuned per fold on a validation split (nested CV).

    python benchmarks/mil_tune.py [--data ../shared/data/mil/tiger.csv.gz] [--repeats 2]

What Ilse et al. 2018 did and ``mil_classic.py`` does not: in each of the ten
outer folds, ``--val-fraction`` of the training bags (stratified) is held out
as a validation split; ``mil.search`` trains ``--trials`` configurations drawn
from ``SPACE`` on the rest of the fold and scores them on that split (the
validation loss, at the best epoch); the configuration best on *this* fold's
validation bags (``SearchResult.best_per_fold``) is trained again on the
fold's training bags (the best epoch on the validation bags restored, as in
the search) and scored on the fold's test bags, which nothing chose anything
on. Accuracy is pooled over the ten test folds of a repeat; mean ± std over
repeats, next to ``mil_classic.py``'s fixed setting (run here on the same
folds) and the published figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mil
from benchmarks._common import print_table, write_json
from benchmarks.mil_classic import PUBLISHED, data_sets, summarise
from mil.data import BagTable, read_mil_csv
from mil.models import create_head
from mil.splits import Fold
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, evaluate, fit

#: Searched per fold: the trainer's step size and regularisation, the head's dropout.
SPACE = {"lr": [1e-4, 5e-4, 1e-3], "weight_decay": [1e-4, 1e-3, 1e-2], "dropout": [0.0, 0.25]}
#: mil_classic.py's fixed setting (the head's default dropout 0.25).
FIXED = {"lr": 5e-4, "weight_decay": 1e-4, "dropout": 0.25}


def fold_correct(
    table: BagTable, head: str, fold: Fold, params: dict[str, float], *, epochs: int, seed: int
) -> float:
    """Correct test bags of ``fold`` for ``head`` trained with ``params`` on its training bags
    (the best epoch on its validation bags restored)."""
    index = {bag: i for i, bag in enumerate(table.ids)}
    bags = {side: table.subset([index[i] for i in getattr(fold, side)])
            for side in ("train", "val", "test")}  # fmt: skip
    config = TrainConfig(
        epochs=epochs, lr=params["lr"], weight_decay=params["weight_decay"], batch_size=4,
        patience=None, standardize=True, seed=seed,
    )  # fmt: skip
    torch.manual_seed(seed)
    head_ = create_head(head, in_dim=table.dim, n_out=2, hidden_dim=128, dropout=params["dropout"])
    model = MILModel(head_)
    task = create_task("classification", table.labels)
    fit(model, task, bags["train"], bags["val"], config)
    return evaluate(model, task, bags["test"]).metrics["accuracy"] * len(bags["test"])


def nested_repeat(
    table: BagTable, head: str, args: argparse.Namespace, repeat: int, work: Path
) -> dict[str, float | list]:
    """One repeat of 10-fold CV: tuned and fixed accuracy on the same folds, and the choices.

    ``work`` is a scratch project for the search's run folder.
    """
    experiment = mil.Experiment(
        table,
        project=work,
        model=head,
        model_kwargs={"hidden_dim": 128},
        splits=mil.KFold(k=10, val_fraction=args.val_fraction, seed=repeat),
        train=TrainConfig(
            epochs=args.epochs, batch_size=4, patience=None, standardize=True, seed=repeat
        ),
        name=f"{head}-{repeat}",
    )
    result = mil.search(
        experiment, SPACE, n_trials=args.trials, metric="loss", seed=repeat,
        max_concurrent=args.jobs,
    )  # fmt: skip
    _, _, splits = experiment.prepare()
    tuned = fixed = 0.0
    for f, fold in enumerate(splits.folds):
        seed = 100 * repeat + f
        best = result.best_per_fold[fold.name]
        tuned += fold_correct(table, head, fold, best, epochs=args.epochs, seed=seed)
        fixed += fold_correct(table, head, fold, FIXED, epochs=args.epochs, seed=seed)
    choices = [result.best_per_fold[fold.name] for fold in splits.folds]
    return {"tuned": tuned / len(table), "fixed": fixed / len(table), "choices": choices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/mil/tiger.csv.gz"),
        help="a classical MIL file, or a folder of them (default: Tiger)",
    )
    parser.add_argument("--heads", default="abmil,gated_abmil", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--trials", type=int, default=8, help="configurations per repeat")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--jobs", type=int, default=2, help="trials at once")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    rows, results = [], {"space": SPACE, "fixed": FIXED, "args": vars(args), "data_sets": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mil-tune-") as work:
        for name, path in data_sets(Path(args.data)).items():
            table = read_mil_csv(path)
            for head in args.heads.split(","):
                runs = [
                    nested_repeat(table, head, args, r, Path(work) / name)
                    for r in range(args.repeats)
                ]
                cell = {k: summarise([r[k] for r in runs]) for k in ("tuned", "fixed")}
                results["data_sets"].setdefault(name, {})[head] = {
                    **cell, "choices": [r["choices"] for r in runs],
                }  # fmt: skip
                for kind, score in cell.items():
                    rows.append({"data": name, "method": f"ours {head} ({kind})",
                                 "accuracy (mean ± std)": f"{score['mean']:.3f} ± "
                                                          f"{score['std']:.3f}"})  # fmt: skip
                    print(rows[-1], flush=True)
            for method in ("Attention (ABMIL)", "Gated attention"):
                if name in PUBLISHED[method]:
                    rows.append({"data": name, "method": f"published {method}",
                                 "accuracy (mean ± std)": PUBLISHED[method][name]})  # fmt: skip
    results["wall_s"] = time.perf_counter() - start
    print(f"\nNested tuning, 10-fold CV × {args.repeats} repeat(s), {args.trials} configurations")
    print_table(rows, ["data", "method", "accuracy (mean ± std)"])
    print(f"\n{results['wall_s']:.0f} s; wrote {write_json('mil_tune', results, args.out)}")


if __name__ == "__main__":
    main()
