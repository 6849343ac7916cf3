"""Results of a MIL experiment: metrics per fold and pooled, predictions, histories."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mil.metrics import auroc, bootstrap_ci, concordance_index, regression_metrics
from mil.tasks import Classification, Task

POOLED = "pooled"
#: Suffixes of the bootstrap CI columns of the headline metric in the pooled row.
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


def headline_metric(task: Task) -> str:
    """The metric a run is summarised by (``auroc``, ``c_index`` or ``rmse``)."""
    if isinstance(task, Classification):
        return "auroc"
    return "rmse" if task.name == "regression" else "c_index"


def headline_ci(
    task: Task, targets: np.ndarray, predictions: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap 95 % CI of the headline metric over pooled test predictions."""
    if isinstance(task, Classification):
        if task.n_out == 2:
            return bootstrap_ci(
                lambda y, p: auroc(y == 1, p[:, 1]), targets, predictions, seed=seed
            )

        def macro(y: np.ndarray, p: np.ndarray) -> float:
            values = [auroc(y == c, p[:, c]) for c in range(p.shape[1])]
            return float(np.nanmean(values)) if not np.isnan(values).all() else np.nan

        return bootstrap_ci(macro, targets, predictions, seed=seed)
    if task.name == "regression":
        return bootstrap_ci(
            lambda y, p: regression_metrics(y, p[:, 0])["rmse"], targets, predictions, seed=seed
        )
    return bootstrap_ci(
        lambda y, p: concordance_index(y[:, 0], y[:, 1], p[:, 0]), targets, predictions, seed=seed
    )


def table_columns(metrics: pd.DataFrame) -> list[str]:
    """The metrics columns worth a table (no confusion matrix or per-class AUROC), at most 8."""
    skip = {"confusion"} | {c for c in metrics.columns if c.startswith("auroc_")}
    return [c for c in metrics.columns if c not in skip][:8]


def metrics_row(name: str, metrics: dict[str, Any], n: int) -> dict[str, Any]:
    """One row of the metrics table (nested values such as the confusion matrix as JSON)."""
    row: dict[str, Any] = {"fold": name, "n": n}
    for key, value in metrics.items():
        row[key] = json.dumps(value) if isinstance(value, list) else value
    return row


@dataclass
class ExperimentResults:
    """What :meth:`mil.Experiment.run` produced (also read back by ``Experiment.load``).

    Attributes
    ----------
    run_dir
        The run folder (``<project>/runs/<run>``).
    metrics
        One row per fold and a ``pooled`` row over every test prediction, with
        the headline metric's bootstrap CI (``<metric>_ci_low``/``_ci_high``) on it.
    predictions
        One row per tested bag: ``slide_id``, ``patient_id``, ``fold``, ``label``
        and the task's prediction columns (``prob_<class>``, ``risk``, ``prediction``).
    histories
        Per-epoch training records per fold.
    files
        Named output files (``report``, ``roc``, ``metrics_png``, heatmaps…); saved
        relative to the run folder, so a moved run names its files where they are.
    """

    run_dir: Path
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def pooled(self) -> dict[str, Any]:
        """The pooled metrics as a dict."""
        return self.metrics.set_index("fold").loc[POOLED].to_dict()

    def save(self) -> None:
        """Write ``metrics.csv``, ``predictions.csv`` and per-fold ``history.csv``."""
        self.metrics.to_csv(self.run_dir / "metrics.csv", index=False)
        self.predictions.to_csv(self.run_dir / "predictions.csv", index=False)
        for fold, history in self.histories.items():
            history.to_csv(self.run_dir / fold / "history.csv", index=False)
        relative = {k: os.path.relpath(v, self.run_dir) for k, v in self.files.items()}
        (self.run_dir / "files.json").write_text(json.dumps(relative, indent=1))

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> ExperimentResults:
        """Read the results saved in ``run_dir``."""
        run_dir = Path(run_dir)
        histories = {p.parent.name: pd.read_csv(p) for p in sorted(run_dir.glob("*/history.csv"))}
        files_json = run_dir / "files.json"
        files = json.loads(files_json.read_text()) if files_json.is_file() else {}
        return cls(
            run_dir=run_dir,
            metrics=pd.read_csv(run_dir / "metrics.csv"),
            predictions=pd.read_csv(
                run_dir / "predictions.csv", dtype={"slide_id": str, "patient_id": str}
            ),
            histories=histories,
            files={k: str(run_dir / v) for k, v in files.items()},
        )

    def summary(self) -> str:
        """The metrics table (folds and pooled), the headline metric's 95 % CI, and files."""
        table = self.metrics[table_columns(self.metrics)]
        text = table.to_string(index=False, float_format="{:.3f}".format)
        lines = [f"run {self.run_dir.name} ({self.run_dir})", text]
        pooled = self.pooled
        for low in (c for c in self.metrics.columns if c.endswith(CI_LOW)):
            metric = low.removesuffix(CI_LOW)
            lines.append(
                f"pooled {metric}: {pooled[metric]:.3f} "
                f"[95% CI {pooled[low]:.3f}, {pooled[metric + CI_HIGH]:.3f}] "
                f"over {int(pooled['n'])} test predictions"
            )
        lines += [f"{name}: {path}" for name, path in sorted(self.files.items())]
        return "\n".join(lines)

    def __repr__(self) -> str:
        pooled = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in self.pooled.items()
            if k not in ("confusion",)
        }
        return f"ExperimentResults({self.run_dir}, {len(self.metrics) - 1} folds, pooled={pooled})"
