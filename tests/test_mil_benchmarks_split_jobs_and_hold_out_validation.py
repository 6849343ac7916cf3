"""The MIL benchmarks' bookkeeping: jobs per CV repeat, validation splits, cohort sizes.

- ``benchmarks/mil_classic.py`` runs one job per (set, head, repeat) on worker
  processes: run as a fresh process on a tiny separable table, every cell holds
  one accuracy per repeat, and the repeats of the same seed give the same
  accuracy whether run alone or among others.
- ``benchmarks/mil_imbalance.py`` holds out a stratified validation split (each
  class at least once, never a training bag) and grows the simulated cohort
  until the minority holds enough slides.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.mil_imbalance import cohort_size, fit_and_val, held_out
from mil.data import BagTable

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _toy_table(path: Path, bags: int = 20) -> None:
    """Separable bags: a positive bag holds one instance far from the others."""
    rng = np.random.default_rng(0)
    rows = ["bag_id,label,f0,f1,f2"]
    for bag in range(bags):
        label = bag % 2
        x = rng.normal(size=(4, 3))
        x[0] += 6 * label
        rows += [f"{bag},{label}," + ",".join(f"{v:.4f}" for v in row) for row in x]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(rows) + "\n")


def _classic(data: Path, out: Path, repeats: int) -> dict:
    command = [
        sys.executable, str(BENCHMARKS / "mil_classic.py"), "--data", str(data),
        "--heads", "mean,abmil", "--repeats", str(repeats), "--epochs", "3", "--jobs", "2",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.integration
def test_classic_benchmark_scores_every_repeat_of_every_cell(tmp_path):
    _toy_table(tmp_path / "toy.csv.gz")
    both = _classic(tmp_path / "toy.csv.gz", tmp_path / "two.json", repeats=2)
    alone = _classic(tmp_path / "toy.csv.gz", tmp_path / "one.json", repeats=1)
    for head in ("mean", "abmil"):
        cell = both["data_sets"]["toy"][head]
        assert len(cell["runs"]) == 2 and all(0 <= r <= 1 for r in cell["runs"])
        assert cell["cpu_s"] > 0 and cell["mean"] == pytest.approx(np.mean(cell["runs"]))
        assert alone["data_sets"]["toy"][head]["runs"] == cell["runs"][:1]
    assert both["data_sets"]["toy"]["abmil"]["mean"] > 0.7  # the toy task is learnable
    assert both["cpu_s"] == pytest.approx(
        sum(both["data_sets"]["toy"][h]["cpu_s"] for h in ("mean", "abmil"))
    )


def test_validation_split_is_stratified_and_disjoint_from_training():
    labels = np.array([0] * 95 + [1] * 5)
    val = held_out(labels, 0.2, np.random.default_rng(0))
    assert (labels[val] == 1).sum() == 1 and (labels[val] == 0).sum() == 19
    table = BagTable.from_arrays([np.zeros((2, 3))] * len(labels), labels.tolist())
    train, held = fit_and_val(table, 0.2, seed=3)
    assert len(train) + len(held) == len(table)
    assert not set(train.ids) & set(held.ids)
    assert sorted(held.labels) == [0] * 19 + [1]
    tiny = held_out(np.array([0, 0, 0, 1, 1]), 0.1, np.random.default_rng(0))
    assert sorted(np.array([0, 0, 0, 1, 1])[tiny]) == [0, 1]  # each class at least once


def test_simulated_cohort_grows_until_the_minority_has_enough_slides():
    assert cohort_size(120, 0.5, 40) == 120
    assert cohort_size(120, 0.1, 40) == 400
    assert cohort_size(120, 0.05, 40) == 800
    assert round(cohort_size(120, 0.05, 40) * 0.05) >= 40
