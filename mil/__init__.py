"""MIL stage: heads, experiments and attention over tile features.

Stands on :mod:`slideflow_core` only. Train and evaluate from Python::

    import mil

    exp = mil.Experiment(cohort, project="project", features="uni", label="subtype",
                         model="abmil", splits=mil.KFold(k=5, val_fraction=0.15))
    results = exp.run()            # metrics, predictions, attention in the stores
    mil.Experiment.load(results.run_dir).predict(new_cohort)

or from a run config file (:mod:`mil.config`) with ``mil.Experiment.from_config``
(``sfc mil train CONFIG.yaml``), and predict a whole project with the ``predict``
stage (:func:`predict_cohort`, ``sfc mil predict RUN PROJECT``). Classical MIL
tables (``bag_id,label,f0,…``) work the same way through :func:`read_mil_csv`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slideflow_core.lazy import lazy_exports

if TYPE_CHECKING:
    from mil.config import DataConfig, ExperimentConfig, MILRunConfig
    from mil.data import BagSource, BagTable, StoreBags, bags_from_cohort, read_mil_csv
    from mil.errors import CheckpointError, MILError
    from mil.experiment import Experiment
    from mil.models import HeadOutput, MILHead, create_head, list_heads
    from mil.predictor import Predictor
    from mil.report import plot_attention
    from mil.results import ExperimentResults
    from mil.splits import Fold, FromColumn, KFold, MonteCarlo, Splits
    from mil.stacked import fit_stacked
    from mil.stage import PredictConfig, PredictStage, predict_cohort
    from mil.tasks import create_task
    from mil.train import MILModel, TrainConfig, evaluate, fit, predict_bags
    from mil.tuning import SearchResult, search

# Public name -> module, imported on first use: `sfc` imports mil.cli to build its
# parser, and torch (seconds) must not load until a model is really needed.
_EXPORTS = {
    "DataConfig": "mil.config",
    "ExperimentConfig": "mil.config",
    "MILRunConfig": "mil.config",
    "BagSource": "mil.data",
    "BagTable": "mil.data",
    "StoreBags": "mil.data",
    "bags_from_cohort": "mil.data",
    "read_mil_csv": "mil.data",
    "CheckpointError": "mil.errors",
    "MILError": "mil.errors",
    "Experiment": "mil.experiment",
    "HeadOutput": "mil.models",
    "MILHead": "mil.models",
    "create_head": "mil.models",
    "list_heads": "mil.models",
    "Predictor": "mil.predictor",
    "plot_attention": "mil.report",
    "ExperimentResults": "mil.results",
    "Fold": "mil.splits",
    "FromColumn": "mil.splits",
    "KFold": "mil.splits",
    "MonteCarlo": "mil.splits",
    "Splits": "mil.splits",
    "fit_stacked": "mil.stacked",
    "PredictConfig": "mil.stage",
    "PredictStage": "mil.stage",
    "predict_cohort": "mil.stage",
    "create_task": "mil.tasks",
    "MILModel": "mil.train",
    "TrainConfig": "mil.train",
    "evaluate": "mil.train",
    "fit": "mil.train",
    "predict_bags": "mil.train",
    "SearchResult": "mil.tuning",
    "search": "mil.tuning",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BagSource",
    "BagTable",
    "CheckpointError",
    "DataConfig",
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
    "MILRunConfig",
    "MonteCarlo",
    "PredictConfig",
    "PredictStage",
    "Predictor",
    "SearchResult",
    "Splits",
    "StoreBags",
    "TrainConfig",
    "bags_from_cohort",
    "create_head",
    "create_task",
    "evaluate",
    "fit",
    "fit_stacked",
    "list_heads",
    "plot_attention",
    "predict_bags",
    "predict_cohort",
    "read_mil_csv",
    "search",
]
