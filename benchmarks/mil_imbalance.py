"""MIL under label imbalance and site shift: SC-MIL against the usual remedies.

    python benchmarks/mil_imbalance.py [--seeds 5] [--minority 0.5,0.2,0.1,0.05]
    python benchmarks/mil_imbalance.py --data ../shared/data/mil   # classical sets

Methods (one row each): ABMIL with class weights, ABMIL with balanced sampling,
CLAM-SB, TransMIL, DSMIL and SC-MIL (progressive, as published; ``--scmil-modes``
adds ``joint``/``two_stage``). Positives are the minority class: at each setting
they make ``--minority`` of the training slides.

Without ``--data``: slides are bags of real embedded tiles
(``benchmarks/mil_tile_pools.py``: rendered synthetic tissue, ``handcrafted``
features, small tumour foci close to normal, inflammation-like look-alikes);
every seed draws a new training cohort at the setting's minority share
(``--train`` slides, more when needed to hold ``--min-minority`` positive
slides: with 120 slides the 5 % setting would train on 5 positives, and no
method learns from that) and balanced test sets from the training site (ID)
and from the second site (OOD: other stain, JPEG, blur, scanner resolution),
the latter also site-standardised (``OOD site-std``: its features moved to
the training slides' mean and std, no labels used; see ``site_standardised``).

Balanced accuracy and macro-F1 are taken at the threshold with the best
balanced accuracy on a validation split (``--val-fraction`` of each class of
the training slides, held out of training), as a user would pick the
operating point: the model's probabilities drift away from 0.5 under
imbalance, and its own training slides separate at any threshold.

With ``--data`` (a file or folder of ``bag_id,label,f…`` tables): stratified
``--folds``-fold CV per seed; in each training fold the positive bags are
subsampled to the minority share and the validation split is held out; test
folds are untouched (ID only).

Reports per setting and method the mean over seeds, with a 95 % bootstrap
interval, of macro-F1 and balanced accuracy (ID and OOD) and AUROC.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import print_table, write_json
from benchmarks.mil_classic import data_sets
from benchmarks.mil_tile_pools import (
    Method,
    as_table,
    draw_bags,
    fit_and_score,
    load_or_build_pools,
    mean_ci,
    site_standardised,
)
from mil.data import BagTable, read_mil_csv
from mil.splits import KFold

BASELINES = (
    Method(name="ABMIL + class weights", head="abmil", balance="weights"),
    Method(name="ABMIL + balanced sampling", head="abmil", balance="batches"),
    Method(name="CLAM-SB", head="clam_sb"),
    Method(name="TransMIL", head="transmil", head_kwargs={"hidden_dim": 128, "landmarks": 64}),
    Method(name="DSMIL", head="dsmil"),
)


def methods(scmil_modes: list[str], skip: set[str]) -> list[Method]:
    """The baselines and SC-MIL in each mode asked for (class-balanced batches:
    its contrastive loss needs partners of both classes in every batch), less ``skip``."""
    scmil = [
        Method(name=f"SC-MIL ({m})", head="scmil", head_kwargs={"mode": m}, balance="batches")
        for m in scmil_modes
    ]
    return [m for m in (*BASELINES, *scmil) if m.name not in skip]


def minority_subset(labels: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping every negative and enough positives to make ``share`` of the set."""
    negatives, positives = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    wanted = max(2, round(share / (1 - share) * len(negatives))) if share < 0.5 else len(positives)
    keep = rng.choice(positives, size=min(wanted, len(positives)), replace=False)
    return np.sort(np.concatenate([negatives, keep]))


def held_out(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a stratified validation split: ``fraction`` of each class, at least one."""
    picked = [
        rng.choice(members, size=max(1, round(fraction * len(members))), replace=False)
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(picked))


def fit_and_val(table: BagTable, fraction: float, seed: int) -> tuple[BagTable, BagTable]:
    """``table`` split into (training, validation) bags, the latter stratified."""
    labels = np.asarray(table.labels)
    val = held_out(labels, fraction, np.random.default_rng(seed))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return table.subset(train.tolist()), table.subset(val.tolist())


def cohort_size(train: int, minority: float, min_minority: int) -> int:
    """Training slides: ``train``, or enough that ``minority`` of them make ``min_minority``."""
    return max(train, math.ceil(min_minority / minority))


def simulated_runs(args: argparse.Namespace, setting: float, seed: int) -> list[dict]:
    """Every method on one seed's simulated slides at one minority share."""
    pools = load_or_build_pools(args.work / "tile_pools.npz", slides=args.pool_slides)
    draw = {"tumour_strength": args.tumour_strength}
    n_train = cohort_size(args.train, setting, args.min_minority)
    train = draw_bags(pools, n_train, positive_fraction=setting, seed=seed, **draw)
    tests = {
        "ID": draw_bags(pools, args.test, positive_fraction=0.5, seed=seed + 1000, **draw),
        "OOD": draw_bags(pools, args.test, positive_fraction=0.5, site=2, seed=seed + 2000, **draw),
    }
    tests["OOD site-std"] = site_standardised(tests["OOD"], train)
    table, val = fit_and_val(as_table(train), args.val_fraction, seed)
    test_tables = {k: (as_table(v), None) for k, v in tests.items()}
    rows = []
    for method in methods(args.scmil_modes, args.skip):
        start = time.perf_counter()
        scores = fit_and_score(method, table, test_tables, epochs=args.epochs, seed=seed, val=val)
        rows.append({"method": method.name, "scores": scores, "s": time.perf_counter() - start})
    return rows


def classical_runs(table: BagTable, args: argparse.Namespace, setting: float, seed: int) -> list:
    """Every method over ``--folds``-fold CV of one table (positives subsampled in training)."""
    labels = np.asarray(table.labels)
    splits = KFold(k=args.folds, seed=seed).make(table.ids, table.patients, list(table.labels))
    index = {bag: i for i, bag in enumerate(table.ids)}
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods(args.scmil_modes, args.skip):
        start = time.perf_counter()
        folds = []
        for f, fold in enumerate(splits.folds):
            train = np.array([index[i] for i in fold.train])
            train = train[minority_subset(labels[train], setting, rng)]
            fitted, val = fit_and_val(table.subset(train.tolist()), args.val_fraction, seed)
            test = table.subset([index[i] for i in fold.test])
            folds.append(
                fit_and_score(
                    method, fitted, {"ID": (test, None)},
                    epochs=args.epochs, seed=100 * seed + f, val=val,
                )["ID"]
            )  # fmt: skip
        scores = {"ID": {k: float(np.mean([s[k] for s in folds])) for k in folds[0]}}
        rows.append({"method": method.name, "scores": scores, "s": time.perf_counter() - start})
    return rows


def summarise(runs: list[dict]) -> list[dict]:
    """Mean [95 % CI] over seeds per (data, setting, method)."""
    table = []
    keys = sorted({(r["data"], r["minority"], r["method"]) for r in runs}, key=str)
    for data, minority, method in keys:
        mine = [
            r for r in runs if (r["data"], r["minority"], r["method"]) == (data, minority, method)
        ]
        row = {"data": data, "minority": f"{minority:.0%}", "method": method}
        for split in mine[0]["scores"]:
            for metric, label in (("macro_f1", "macro-F1"), ("balanced_accuracy", "bal acc"),
                                  ("auroc", "AUROC")):  # fmt: skip
                mean, low, high = mean_ci([r["scores"][split][metric] for r in mine])
                row[f"{split} {label}"] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        row["s/seed"] = float(np.mean([r["s"] for r in mine]))
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="classical MIL file or folder (default: simulated)"
    )
    parser.add_argument("--work", type=Path, default=Path("benchmarks/results/mil_work"),
                        help="folder caching the tile pools")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run: first-seed … first-seed + seeds - 1 (split a sweep "
                             "over processes)")  # fmt: skip
    parser.add_argument("--minority", default="0.5,0.2,0.1,0.05")
    parser.add_argument("--scmil-modes", default="progressive", help="comma-separated")
    parser.add_argument("--skip", default="", help="comma-separated method names to leave out")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=120, help="training slides (simulated)")
    parser.add_argument(
        "--min-minority",
        type=int,
        default=40,
        help="positive training slides at least (simulated; grows --train)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of each class of the training slides held out to pick "
                             "the operating point")  # fmt: skip
    parser.add_argument("--test", type=int, default=80, help="slides per test set (simulated)")
    parser.add_argument("--tumour-strength", type=float, default=0.6)
    parser.add_argument("--pool-slides", type=int, default=6)
    parser.add_argument("--folds", type=int, default=5, help="CV folds (classical sets)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    args.scmil_modes = args.scmil_modes.split(",")
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    torch.set_num_threads(1)  # small models: threads only add synchronisation
    settings = [float(v) for v in args.minority.split(",")]
    runs: list[dict] = []
    sources = data_sets(args.data) if args.data else {"simulated": None}
    for name, path in sources.items():
        table = read_mil_csv(path) if path else None
        for setting in settings:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if table is None:
                    rows = simulated_runs(args, setting, seed)
                else:
                    rows = classical_runs(table, args, setting, seed)
                for row in rows:
                    runs.append({"data": name, "minority": setting, "seed": seed, **row})
                    print(name, f"{setting:.0%}", seed, row["method"], row["scores"], flush=True)
    summary = summarise(runs)
    print(f"\nImbalance (positives are the minority), mean over {args.seeds} seeds [95% CI]")
    print_table(summary, list(summary[0]))
    payload = {"settings": settings, "seeds": args.seeds, "runs": runs, "summary": summary}
    print(f"\nwrote {write_json('mil_imbalance', payload, args.out)}")


if __name__ == "__main__":
    main()
