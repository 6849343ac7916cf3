"""``mil.Experiment``: cross-validated MIL training and evaluation from Python.

A run lives in ``<project>/runs/<name>/``::

    config.yaml             the resolved config (task, head, splits, trainer, checksums)
    splits.json             the folds: train / val / test bag ids
    fold-<i>/model.safetensors, fold-<i>/history.csv
    metrics.csv             per-fold and pooled test metrics (+ bootstrap CI)
    predictions.csv         slide, patient, fold, label, probabilities / risk
    roc.png, metrics.png, report.html, heatmaps/<slide>.png

and, for slide stores, each tested slide's attention goes back into its store
as ``attention/<name>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mil.checkpoint import load_checkpoint, save_checkpoint
from mil.data import BagSource, StoreBags, bags_from_cohort
from mil.errors import MILError
from mil.models import heads
from mil.report import write_report
from mil.results import POOLED, ExperimentResults, headline_ci, headline_metric, metrics_row
from mil.splits import KFold, Splits, SplitSpec, spec_from_dict, spec_to_dict
from mil.tasks import Classification, Task, create_task, task_from_dict, tasks
from mil.train import MILModel, TrainConfig, fit, predict_bags
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.features import write_attention
from slideflow_core.store import part_key

CONFIG_FILE = "config.yaml"
GIVEN = {"method": "given"}  # splits passed ready-made rather than as a spec


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run (written to ``config.yaml``)."""

    name: str
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
    model: str = "abmil"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    features: str | None = None
    label: str | None = None
    event: str | None = None
    splits: dict[str, Any] = field(default_factory=lambda: spec_to_dict(KFold()))
    train: dict[str, Any] = field(default_factory=lambda: TrainConfig().to_dict())
    heatmaps: int = 4

    def __post_init__(self) -> None:
        part_key(self.name)  # the run name is also the store part attention/<name>
        heads.entry(self.model)
        tasks.entry(self.task)
        if self.task.startswith("survival") and self.event is None and self.features is not None:
            raise MILError(
                f"task {self.task!r} needs event= (the event column) besides label= (the time)"
            )
        if self.heatmaps < 0:
            raise ValueError(f"heatmaps must be >= 0, got {self.heatmaps}")
        TrainConfig(**self.train)
        if self.splits != GIVEN:
            spec_from_dict(self.splits)

    @property
    def train_config(self) -> TrainConfig:
        """The trainer settings."""
        return TrainConfig(**self.train)


def _default_name(model: str, label: str | None) -> str:
    return f"{model}-{label or 'bags'}-{time.strftime('%Y%m%d-%H%M%S')}"


def _label_columns(task: Task, labels: Sequence[Any]) -> dict[str, list[Any]]:
    if task.name.startswith("survival"):
        return {"time": [v[0] for v in labels], "event": [int(v[1]) for v in labels]}
    return {"label": list(labels)}


def _strata(task: Task, labels: Sequence[Any]) -> list[Any] | None:
    if isinstance(task, Classification):
        return list(labels)
    if task.name.startswith("survival"):
        return [int(v[1]) for v in labels]
    return None


class Experiment:
    """A cross-validated MIL experiment over slide stores or in-memory bags.

    Parameters
    ----------
    data
        A :class:`~slideflow_core.cohort.Cohort` (bags are read from
        ``<project>/stores/<slide_id>.zarr``) or a bag source such as
        :func:`mil.read_mil_csv`'s table.
    project
        Project folder; the run goes to ``<project>/runs/<name>``.
    features
        Feature part of the stores (the embedder id, e.g. ``"uni"``); cohorts only.
    label
        Label column (the time for survival); cohorts only.
    event
        Event column (1 event, 0 censored) for survival tasks.
    task
        ``"classification"`` (binary or multi-class), ``"regression"``,
        ``"survival_cox"`` or ``"survival_discrete"``.
    task_options
        E.g. ``classes=[...]`` or ``n_bins=4``.
    model
        Head name (:func:`mil.list_heads`).
    model_kwargs
        Head options (``hidden_dim``, ``dropout``…).
    splits
        A split spec (:class:`~mil.splits.KFold`, :class:`~mil.splits.MonteCarlo`,
        :class:`~mil.splits.FromColumn`) or ready :class:`~mil.splits.Splits`.
    train
        Trainer settings.
    name
        Run name (default ``<model>-<label>-<time>``).
    heatmaps
        Attention heatmaps to draw (the most confident tested slides).

    Examples
    --------
    >>> exp = Experiment(cohort, project="project", features="uni", label="subtype",
    ...                  model="abmil", splits=KFold(k=5, val_fraction=0.15))  # doctest: +SKIP
    >>> results = exp.run()  # doctest: +SKIP
    >>> Experiment.load(results.run_dir).predict(new_cohort)  # doctest: +SKIP
    """

    def __init__(
        self,
        data: Cohort | BagSource | None,
        *,
        project: str | os.PathLike[str],
        features: str | None = None,
        label: str | None = None,
        event: str | None = None,
        task: str = "classification",
        task_options: dict[str, Any] | None = None,
        model: str = "abmil",
        model_kwargs: dict[str, Any] | None = None,
        splits: SplitSpec | Splits | None = None,
        train: TrainConfig | None = None,
        name: str | None = None,
        heatmaps: int = 4,
    ) -> None:
        if isinstance(data, Cohort) and (features is None or label is None):
            raise MILError(
                "an experiment on a cohort needs features= (the embedder id) and label=",
                hint="e.g. Experiment(cohort, project=..., features='uni', label='subtype')",
            )
        spec = splits if splits is not None else KFold(k=5, val_fraction=0.15)
        self._given_splits = spec if isinstance(spec, Splits) else None
        self.config = ExperimentConfig(
            name=name or _default_name(model, label),
            task=task,
            task_options=dict(task_options or {}),
            model=model,
            model_kwargs=dict(model_kwargs or {}),
            features=features,
            label=label,
            event=event,
            splits=GIVEN if isinstance(spec, Splits) else spec_to_dict(spec),
            train=(train or TrainConfig()).to_dict(),
            heatmaps=heatmaps,
        )
        self.layout = ProjectLayout(project)
        self.data = data
        self.task: Task | None = None
        self.splits: Splits | None = None
        self.results: ExperimentResults | None = None
        self._checksums: dict[str, str] = {}

    # -- paths and data -----------------------------------------------------------
    @property
    def name(self) -> str:
        """The run name (also the store part ``attention/<name>``)."""
        return self.config.name

    @property
    def run_dir(self) -> Path:
        """``<project>/runs/<name>``."""
        return self.layout.run(self.config.name)

    def _source(self, data: Cohort | BagSource | None, *, labelled: bool) -> BagSource:
        if data is None:
            raise MILError("this experiment has no data", hint="pass a Cohort or a bag table")
        if not isinstance(data, Cohort):
            return data
        return bags_from_cohort(
            data,
            project=self.layout.root,
            features=str(self.config.features),
            label=self.config.label if labelled else None,
            event=self.config.event if labelled else None,
        )

    @staticmethod
    def _columns(data: Cohort | BagSource | None, source: BagSource) -> dict[str, list[Any]]:
        if not isinstance(data, Cohort):
            return {}
        return {c: [data[i].labels.get(c) for i in source.ids] for c in data.label_columns}

    def _frame(
        self, source: BagSource, predictions: np.ndarray, *, fold: str | None, labelled: bool
    ) -> pd.DataFrame:
        assert self.task is not None
        frame = pd.DataFrame({"slide_id": source.ids, "patient_id": source.patients})
        if fold is not None:
            frame["fold"] = fold
        if labelled:
            for column, values in _label_columns(self.task, source.labels).items():
                frame[column] = values
            if isinstance(self.task, Classification):
                frame["target"] = self.task.encode(source.labels)
        for j, column in enumerate(self.task.columns):
            frame[column] = predictions[:, j]
        return frame

    # -- running ------------------------------------------------------------------
    def prepare(self) -> tuple[BagSource, Task, Splits]:
        """Resolve the bags, the task (classes, bins) and the checked splits, without training.

        Raises
        ------
        MILError
            For missing features or labels, labels unusable for the task, or
            splits that leak patients.
        """
        source = self._source(self.data, labelled=True)
        task = self.task = create_task(self.config.task, source.labels, **self.config.task_options)
        task.encode(source.labels)  # every label usable, before any training
        splits = self._given_splits or spec_from_dict(self.config.splits).make(
            source.ids,
            source.patients,
            _strata(task, source.labels),
            self._columns(self.data, source),
        )
        splits.check(dict(zip(source.ids, source.patients, strict=True)))
        self.splits = splits
        return source, task, splits

    def run(self) -> ExperimentResults:
        """Train and test every fold; write the run folder and attention; return the results.

        Raises
        ------
        MILError
            For missing features or labels, unusable labels for the task, or splits
            that leak patients.
        """
        config = self.config
        source, task, splits = self.prepare()
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        splits.save(run_dir / "splits.json")
        index = {bag: i for i, bag in enumerate(source.ids)}

        def pick(ids: Sequence[str]) -> BagSource:
            return source.subset([index[i] for i in ids])

        frames, rows, histories = [], [], {}
        for f, fold in enumerate(splits.folds):
            test = pick(fold.test)
            if not len(test):
                raise MILError(f"{fold.name} has no test bags", hint="check the split column/spec")
            model, history = self._train_fold(f, fold.name, pick(fold.train), pick(fold.val))
            histories[fold.name] = pd.DataFrame(history)
            predictions, _, scores = predict_bags(model, task, test)
            rows.append(
                metrics_row(
                    fold.name, task.metrics(task.encode(test.labels), predictions), len(test)
                )
            )
            frames.append(self._frame(test, predictions, fold=fold.name, labelled=True))
            if isinstance(test, StoreBags):
                self._write_attention(test, scores, folds=[fold.name])
        predictions = pd.concat(frames, ignore_index=True)
        pooled_targets = task.encode(pick(list(predictions["slide_id"])).labels)
        pooled_values = predictions[task.columns].to_numpy()
        pooled = metrics_row(POOLED, task.metrics(pooled_targets, pooled_values), len(predictions))
        metric = headline_metric(task)
        low, high = headline_ci(task, pooled_targets, pooled_values, seed=config.train_config.seed)
        pooled.update({f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        metrics = pd.DataFrame([*rows, pooled])
        record = self._write_config(source)
        files = write_report(
            run_dir,
            name=config.name,
            task=task,
            metrics=metrics,
            predictions=predictions,
            config=record,
            heatmaps=self._heatmaps(source, predictions),
        )
        self.results = ExperimentResults(
            run_dir=run_dir,
            metrics=metrics,
            predictions=predictions,
            histories=histories,
            files=files,
        )
        self.results.save()
        return self.results

    def _train_fold(
        self, f: int, fold: str, train: BagSource, val: BagSource
    ) -> tuple[MILModel, list[dict[str, Any]]]:
        assert self.task is not None
        config = self.config
        train_config = TrainConfig(**{**config.train, "seed": config.train_config.seed + f})
        torch.manual_seed(train_config.seed)
        head = heads.get(config.model)(train.dim, self.task.n_out, **config.model_kwargs)
        model = MILModel(head)
        result = fit(model, self.task, train, val if len(val) else None, train_config)
        path = self.run_dir / fold / "model.safetensors"
        self._checksums[fold] = save_checkpoint(
            path, model, head=config.model, head_kwargs=config.model_kwargs
        )
        return model, result.history

    def _write_attention(
        self, source: StoreBags, scores: Sequence[np.ndarray], folds: list[str]
    ) -> None:
        assert self.task is not None
        info = {
            "head": self.config.model,
            "folds": folds,
            "task": self.task.name,
            "columns": [str(c) for c in getattr(self.task, "classes", ())],
            "run_dir": str(self.run_dir),
            "identity": {"run": self.config.name, "folds": folds},
        }
        for store, values in zip(source.stores, scores, strict=True):
            write_attention(store, self.config.name, values, model_id=source.model_id, info=info)

    def _heatmaps(self, source: BagSource, predictions: pd.DataFrame) -> list[Path]:
        from mil.report import plot_attention

        if not isinstance(source, StoreBags) or self.config.heatmaps == 0:
            return []
        assert self.task is not None
        order = predictions.sort_values(self.task.columns[-1], ascending=False)["slide_id"]
        stores = dict(zip(source.ids, source.stores, strict=True))
        out_dir = self.run_dir / "heatmaps"
        out_dir.mkdir(exist_ok=True)
        written = []
        for slide_id in order[: self.config.heatmaps]:
            written.append(
                plot_attention(
                    stores[slide_id],
                    self.config.name,
                    out_dir / f"{slide_id}.png",
                    thumbnail=self._thumbnail(slide_id),
                )
            )
        return written

    def _thumbnail(self, slide_id: str) -> np.ndarray | Path | None:
        """``<project>/thumbnails/<slide>.png``, else the slide's own thumbnail, else none."""
        path = self.layout.thumbnail(slide_id)
        if path.is_file():
            return path
        if isinstance(self.data, Cohort) and Path(self.data[slide_id].path).is_file():
            with self.data.open_slide(slide_id) as slide:
                return slide.thumbnail(1024)
        return None

    def _write_config(self, source: BagSource) -> dict[str, Any]:
        assert self.task is not None
        from slideflow_core.provenance import package_versions, run_context

        record = {
            "experiment": asdict(self.config),
            "task": self.task.describe(),
            "data": {
                "kind": "stores" if isinstance(source, StoreBags) else "bags",
                "n_bags": len(source),
                "feature_dim": source.dim,
                "source": getattr(source, "source", None),
            },
            "checkpoints": {
                fold: {"path": f"{fold}/model.safetensors", "sha256": sha}
                for fold, sha in self._checksums.items()
            },
            "versions": package_versions(("torch", "safetensors")),
            **run_context(),
        }
        (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
        return record

    # -- reloading and predicting -------------------------------------------------
    @classmethod
    def load(
        cls, run_dir: str | os.PathLike[str], data: Cohort | BagSource | None = None
    ) -> Experiment:
        """Reopen a finished run (config, splits, results, checkpoints checked on use).

        The project is the folder two levels above ``run_dir``
        (``<project>/runs/<name>``), so a moved project still loads.

        Raises
        ------
        MILError
            If ``run_dir`` has no ``config.yaml``.
        """
        run_dir = Path(run_dir).absolute()
        path = run_dir / CONFIG_FILE
        if not path.is_file():
            raise MILError(f"{run_dir} is not a MIL run (no {CONFIG_FILE})", hint="run it first")
        record = yaml.safe_load(path.read_text())
        config = ExperimentConfig(**record["experiment"])
        self = cls.__new__(cls)
        self.config = config
        self.layout = ProjectLayout(run_dir.parent.parent)
        self.data = data
        self._given_splits = None
        self.task = task_from_dict(record["task"])
        self.splits = Splits.load(run_dir / "splits.json")
        self.results = ExperimentResults.read(run_dir)
        self._checksums = {fold: c["sha256"] for fold, c in record["checkpoints"].items()}
        return self

    def model(self, fold: str | int) -> MILModel:
        """The trained model of one fold (by name or index), verified against its checksum."""
        names = list(self._checksums)
        name = names[fold] if isinstance(fold, int) else fold
        if name not in self._checksums:
            raise MILError(f"run {self.config.name} has no fold {fold!r}; it has {names}")
        return load_checkpoint(
            self.run_dir / name / "model.safetensors", sha256=self._checksums[name]
        )

    def predict(
        self,
        data: Cohort | BagSource,
        *,
        fold: str | int | None = None,
        attention: bool = False,
    ) -> pd.DataFrame:
        """Apply the trained model(s) to new slides or bags.

        Parameters
        ----------
        data
            A cohort (stores under this project with the run's features) or bags.
        fold
            One fold's model; default: the mean of every fold's predictions.
        attention
            Also write the (fold-averaged) scores to each store as ``attention/<run>``.

        Returns
        -------
        pandas.DataFrame
            ``slide_id``, ``patient_id``, the label columns when ``data`` has them,
            and the task's prediction columns.
        """
        if self.task is None or not self._checksums:
            raise MILError(
                "the experiment has not been run", hint="call run() or Experiment.load()"
            )
        labelled = not isinstance(data, Cohort) or self.config.label in data.label_columns
        source = self._source(data, labelled=False)
        folds = list(self._checksums) if fold is None else [fold]
        total, scores = None, None
        for name in folds:
            predictions, _, bag_scores = predict_bags(self.model(name), self.task, source)
            total = predictions if total is None else total + predictions
            scores = (
                bag_scores
                if scores is None
                else [a + b for a, b in zip(scores, bag_scores, strict=True)]
            )
        assert total is not None and scores is not None
        if attention and isinstance(source, StoreBags):
            self._write_attention(
                source, [s / len(folds) for s in scores], folds=[str(f) for f in folds]
            )
        frame = self._frame(source, total / len(folds), fold=None, labelled=False)
        if labelled and isinstance(data, Cohort):
            frame.insert(2, "label", [data[i].labels.get(self.config.label) for i in source.ids])
        return frame
