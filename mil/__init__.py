"""MIL stage: heads, experiments and attention over tile features.

Stands on :mod:`slideflow_core` only. Train and evaluate from Python::

    import mil

    exp = mil.Experiment(cohort, project="project", features="uni", label="subtype",
                         model="abmil", splits=mil.KFold(k=5, val_fraction=0.15))
    results = exp.run()            # metrics, predictions, attention in the stores
    mil.Experiment.load(results.run_dir).predict(new_cohort)

Classical MIL tables (``bag_id,label,f0,…``) work the same way through
:func:`read_mil_csv`.
"""

from __future__ import annotations

from mil.data import BagSource, BagTable, StoreBags, bags_from_cohort, read_mil_csv
from mil.errors import CheckpointError, MILError
from mil.experiment import Experiment, ExperimentConfig
from mil.models import HeadOutput, MILHead, create_head, list_heads
from mil.report import plot_attention
from mil.results import ExperimentResults
from mil.search import SearchResult, search
from mil.splits import Fold, FromColumn, KFold, MonteCarlo, Splits
from mil.tasks import create_task
from mil.train import MILModel, TrainConfig, evaluate, fit, predict_bags

__all__ = [
    "BagSource",
    "BagTable",
    "CheckpointError",
    "Experiment",
    "ExperimentConfig",
    "ExperimentResults",
    "Fold",
    "FromColumn",
    "HeadOutput",
    "KFold",
    "MILError",
    "MILHead",
    "MILModel",
    "MonteCarlo",
    "SearchResult",
    "Splits",
    "StoreBags",
    "TrainConfig",
    "bags_from_cohort",
    "create_head",
    "create_task",
    "evaluate",
    "fit",
    "list_heads",
    "plot_attention",
    "predict_bags",
    "read_mil_csv",
    "search",
]
