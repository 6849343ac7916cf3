"""A trained run's fold models applied to one bag at a time: the fold-mean prediction.

:meth:`mil.Experiment.predict` and the ``predict`` stage both go through
:class:`Predictor`, so a slide predicted either way gets the same numbers, the
same ``attention/<run>`` part and the same identity (run, checkpoint checksums,
feature part), and either can resume what the other wrote.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slideflow_core.features import features_part, write_attention

if TYPE_CHECKING:  # torch is imported by whoever loads the models, not by the stage's import
    from mil.tasks import Task
    from mil.train import MILModel


def attention_record(
    *, run_dir: str, head: str, task: Task, folds: Sequence[str], identity: dict[str, Any]
) -> dict[str, Any]:
    """What an ``attention/<run>`` part records about the models that wrote it."""
    return {
        "head": head,
        "folds": list(folds),
        "task": task.name,
        "columns": [str(c) for c in getattr(task, "classes", ())],
        "run_dir": run_dir,
        "identity": identity,
    }


def prediction_identity(
    run: str, checksums: Mapping[str, str], features: str, feature_identity: Any
) -> dict[str, Any]:
    """What makes two predictions of a slide interchangeable: the run's name, the
    checksums of the checkpoints used, and the feature part (name and identity) read."""
    return {
        "run": run,
        "checkpoints": dict(checksums),
        "features": {"part": features_part(features), "identity": feature_identity},
    }


@dataclass(frozen=True)
class Predictor:
    """The fold models of a trained run, ready to predict bags.

    Attributes
    ----------
    run
        The run's name.
    run_dir
        Where the run folder was found.
    head
        Head name.
    task
        The fitted task (classes, bins).
    models
        Fold name → model (checksum verified, eval mode); predictions are their mean.
    checksums
        Fold name → SHA-256 of its checkpoint.
    """

    run: str
    run_dir: str
    head: str
    task: Task
    models: Mapping[str, MILModel]
    checksums: Mapping[str, str]

    @property
    def columns(self) -> list[str]:
        """The prediction columns (``prob_<class>``, ``risk`` or ``prediction``)."""
        return list(self.task.columns)

    def predict(self, features: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """One bag (M, D) through every fold's model.

        Returns
        -------
        tuple
            The mean prediction by column, and the mean instance scores (M,) or (M, K).
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None]
        total: np.ndarray | float = 0.0
        scores: np.ndarray | float = 0.0
        with torch.no_grad():
            for model in self.models.values():
                out = model(x)
                total = total + self.task.predict(out.logits)[0]
                scores = scores + out.scores[0].float().cpu().numpy()
        n = len(self.models)
        row = {c: float(v) for c, v in zip(self.columns, np.asarray(total) / n, strict=True)}
        return row, np.asarray(scores, dtype=np.float32) / n

    def identity(self, features: str, feature_identity: Any) -> dict[str, Any]:
        """This predictor's :func:`prediction_identity` for a feature part."""
        return prediction_identity(self.run, self.checksums, features, feature_identity)

    def write(
        self,
        store: str | os.PathLike[str],
        scores: np.ndarray,
        prediction: Mapping[str, float],
        *,
        part: str,
        features: str,
        feature_identity: Any,
    ) -> None:
        """Write the scores to ``attention/<part>`` with the prediction and identity recorded."""
        info = attention_record(
            run_dir=self.run_dir,
            head=self.head,
            task=self.task,
            folds=list(self.models),
            identity=self.identity(features, feature_identity),
        )
        write_attention(
            store, part, scores, model_id=features, info={**info, "prediction": dict(prediction)}
        )
