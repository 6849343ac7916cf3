"""Classical MIL benchmark: ours next to the published table of Ilse et al. 2018.

    python benchmarks/mil_classic.py [--data ../shared/data/mil] [--repeats 5] [--quick]

Protocol (Ilse et al. 2018, after Wang et al. 2018): 10-fold cross-validation
repeated ``--repeats`` times with different seeds; features standardised inside
each training fold; accuracy pooled over the ten test folds of a repeat, then
mean ± std (and the standard error) over the repeats. Fixed hyper-parameters for
every data set (no per-set tuning): AdamW, lr 5e-4, weight decay 1e-4, batch 4,
``--epochs`` epochs, hidden size 128, ``--encoder-layers`` (1) encoder layers.

``--data`` is one file or a folder of files in the classical format
(``bag_id,label,f0,…`` gzip CSV, one row per instance; see ``mil.read_mil_csv``);
every file is a data set named by its stem (``musk1.csv.gz`` → ``musk1``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import print_table, write_json
from mil.data import BagTable, read_mil_csv
from mil.models import create_head
from mil.splits import KFold
from mil.stacked import fit_stacked
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, evaluate

PUBLISHED_HEADS = ("mean", "max", "abmil", "gated_abmil")
# Table 1 of Ilse et al. 2018 as transcribed in ../shared/data/mil/README.md (the
# neural rows; the README holds the rest).
PUBLISHED = {
    "mi-Net": {
        "musk1": "0.889 ± 0.039", "musk2": "0.858 ± 0.049", "fox": "0.613 ± 0.035",
        "tiger": "0.824 ± 0.034", "elephant": "0.858 ± 0.037",
    },
    "MI-Net": {
        "musk1": "0.887 ± 0.041", "musk2": "0.859 ± 0.046", "fox": "0.622 ± 0.038",
        "tiger": "0.830 ± 0.032", "elephant": "0.862 ± 0.034",
    },
    "Attention (ABMIL)": {
        "musk1": "0.892 ± 0.040", "musk2": "0.858 ± 0.048", "fox": "0.615 ± 0.043",
        "tiger": "0.839 ± 0.022", "elephant": "0.868 ± 0.022",
    },
    "Gated attention": {
        "musk1": "0.900 ± 0.050", "musk2": "0.863 ± 0.042", "fox": "0.603 ± 0.029",
        "tiger": "0.845 ± 0.018", "elephant": "0.857 ± 0.027",
    },
}  # fmt: skip


def data_sets(data: Path) -> dict[str, Path]:
    """Data set name → file, for one file or every ``*.csv``/``*.csv.gz`` in a folder."""
    files = [data] if data.is_file() else sorted(data.glob("*.csv*"))
    named = {f.name.split(".")[0]: f for f in files if f.name.endswith((".csv", ".csv.gz"))}
    if not named:
        raise SystemExit(f"{data}: no classical MIL file (bag_id,label,f0,… as .csv or .csv.gz)")
    return named


def cross_validate(
    table: BagTable, head: str, *, repeat: int, epochs: int, encoder_layers: int = 1
) -> float:
    """Accuracy of ``head`` pooled over the ten test folds of CV repeat ``repeat`` (its seed)."""
    task = create_task("classification", table.labels)
    index = {bag: i for i, bag in enumerate(table.ids)}
    splits = KFold(k=10, seed=repeat).make(table.ids, table.patients, list(table.labels))
    config = TrainConfig(
        epochs=epochs, lr=5e-4, weight_decay=1e-4, batch_size=4, patience=None,
        standardize=True, seed=repeat,
    )  # fmt: skip
    models, trains, tests = [], [], []
    for f, fold in enumerate(splits.folds):
        torch.manual_seed(100 * repeat + f)
        models.append(MILModel(create_head(
            head, in_dim=table.dim, n_out=2, hidden_dim=128, encoder_layers=encoder_layers
        )))  # fmt: skip
        trains.append(table.subset([index[i] for i in fold.train]))
        tests.append(table.subset([index[i] for i in fold.test]))
    # The ten folds' models train together, one vectorised step for all (mil.stacked).
    fit_stacked(models, task, trains, config, seeds=[100 * repeat + f for f in range(len(models))])
    correct = sum(
        evaluate(model, task, test).metrics["accuracy"] * len(test)
        for model, test in zip(models, tests, strict=True)
    )
    return correct / len(table)


def summarise(accuracies: list[float]) -> dict[str, float | list[float]]:
    """Mean, std and standard error of the repeats' accuracies."""
    values = np.asarray(accuracies)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "sem": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0,
        "runs": values.tolist(),
    }


@functools.cache
def _table(path: Path) -> BagTable:
    """A data set read once per worker process (its repeats share it)."""
    return read_mil_csv(path)


def _job(
    path: Path, head: str, repeat: int, epochs: int, encoder_layers: int
) -> tuple[float, float, float]:
    """One CV repeat of one (data set, head) cell, in a worker: (accuracy, wall s, CPU s).

    The CPU seconds do not grow when other programs share the cores, so their
    sum over the jobs divided by the cores is the benchmark's time on idle cores.
    """
    torch.set_num_threads(1)  # the classical models are tiny: threads only add sync cost
    start, cpu = time.perf_counter(), time.process_time()
    accuracy = cross_validate(
        _table(path), head, repeat=repeat, epochs=epochs, encoder_layers=encoder_layers
    )
    return accuracy, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/mil"),
        help="a classical MIL file, or a folder of them (default: ../shared/data/mil)",
    )
    parser.add_argument("--heads", default=",".join(PUBLISHED_HEADS), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--encoder-layers", type=int, default=1,
        help="instance encoder layers (2: D → 256 → 128, deeper as in Ilse et al.'s set-up)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 repeat of Musk1 only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="worker processes")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    sets = data_sets(Path(args.data))
    if args.quick:
        sets = {k: v for k, v in sets.items() if k == "musk1"} or dict([next(iter(sets.items()))])
    repeats = 1 if args.quick else args.repeats
    results: dict = {
        "repeats": repeats, "epochs": args.epochs, "encoder_layers": args.encoder_layers,
        "data_sets": {},
    }  # fmt: skip
    heads = args.heads.split(",")
    tables = {name: read_mil_csv(path) for name, path in sets.items()}
    # One job per CV repeat, the sets with the most bags (the most steps) first, so
    # the last jobs are short and no worker idles long at the end.
    order = sorted(sets, key=lambda name: -len(tables[name]))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        jobs = {
            (name, head, repeat): pool.submit(
                _job, sets[name], head, repeat, args.epochs, args.encoder_layers
            )
            for name in order
            for head in heads
            for repeat in range(repeats)
        }
        rows = []
        for name in order:
            path, table = sets[name], tables[name]
            results["data_sets"][name] = {"file": str(path), "bags": len(table), "dim": table.dim}
            for head in heads:
                runs = [jobs[name, head, repeat].result() for repeat in range(repeats)]
                score = summarise([accuracy for accuracy, _, _ in runs])
                seconds, cpu = sum(r[1] for r in runs), sum(r[2] for r in runs)
                results["data_sets"][name][head] = {**score, "seconds": seconds, "cpu_s": cpu}
                print(
                    f"{name} {head}: {score['mean']:.3f} ± {score['std']:.3f} "
                    f"({seconds:.0f} s, {cpu:.0f} CPU s)",
                    flush=True,
                )
                rows.append({
                    "data": name, "method": f"ours {head}",
                    "accuracy (mean ± std)": f"{score['mean']:.3f} ± {score['std']:.3f}",
                    "sem": f"{score['sem']:.3f}", "seconds": seconds, "CPU s": cpu,
                })  # fmt: skip
            for method, values in PUBLISHED.items():
                if name in values:
                    rows.append({"data": name, "method": f"published {method}",
                                 "accuracy (mean ± std)": values[name]})  # fmt: skip
    wall = time.perf_counter() - start
    cpu = sum(cell[h]["cpu_s"] for cell in results["data_sets"].values() for h in heads)
    results.update(wall_s=wall, cpu_s=cpu, jobs=args.jobs)
    print(f"\nClassical MIL, 10-fold CV × {repeats} repeat(s), accuracy over repeats")
    print_table(rows, ["data", "method", "accuracy (mean ± std)", "sem", "seconds", "CPU s"])
    print(
        f"\nwhole benchmark: {wall:.0f} s wall on {args.jobs} worker(s); {cpu:.0f} CPU s in the "
        f"workers, {cpu / args.jobs:.0f} s on {args.jobs} idle core(s)"
    )
    print(f"\nwrote {write_json('mil_classic', results, args.out)}")


if __name__ == "__main__":
    main()
