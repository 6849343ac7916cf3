"""``mil.Experiment``: cross-validated MIL training and evaluation from Python.

A run lives in ``<project>/runs/<name>/``::

    config.yaml             the resolved run config (mil.config.MILRunConfig) with the
                            fitted task, the data, checkpoint checksums and versions
    splits.json             the folds: train / val / test bag ids
    fold-<i>/model.safetensors, fold-<i>/history.csv
    metrics.csv             per-fold and pooled test metrics (+ bootstrap CI)
    predictions.csv         slide, patient, fold, label, probabilities / risk
    roc.png, metrics.png, report.html, heatmaps/<slide>.png

and, for slide stores, each tested slide's attention goes back into its store
as ``attention/<name>``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from shapely.geometry import MultiPolygon

from mil.checkpoint import load_checkpoint, save_checkpoint
from mil.config import GIVEN, DataConfig, ExperimentConfig, MILRunConfig, default_name
from mil.data import BagSource, BagTable, StoreBags, bags_from_cohort, read_mil_csv
from mil.errors import MILError
from mil.models import heads
from mil.predictor import Predictor, attention_record
from mil.report import write_report
from mil.results import (
    CI_HIGH,
    CI_LOW,
    POOLED,
    ExperimentResults,
    headline_ci,
    headline_metric,
    metrics_row,
)
from mil.splits import KFold, Splits, SplitSpec, spec_from_dict, spec_to_dict
from mil.tasks import Classification, Task, create_task, task_from_dict
from mil.train import MILModel, TrainConfig, fit, predict_bags
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.errors import SlideflowError
from slideflow_core.features import feature_info, write_attention

CONFIG_FILE = "config.yaml"


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


def _data_files(data: Cohort | BagSource | None) -> dict[str, str]:
    """The manifest or MIL table file ``data`` was read from (absolute), to record."""
    key, source = ("manifest", data.source) if isinstance(data, Cohort) else ("bags", None)
    if isinstance(data, BagTable):
        source = data.source
    if source is None or not Path(source).is_file():
        return {}
    return {key: str(Path(source).absolute())}


def _read_data(config: DataConfig, where: str) -> Cohort | BagTable:
    """The cohort or MIL table a run config names."""
    key, path = ("manifest", config.manifest) if config.manifest else ("bags", config.bags)
    if path is None:
        raise MILError(
            f"{where}: data needs manifest (slides) or bags (a classical MIL table)",
            hint="add data.manifest: manifest.csv (or data.bags: table.csv)",
        )
    if not Path(path).is_file():
        raise MILError(
            f"{where}: data.{key}: no file {path}",
            hint="paths in a run config are relative to the config file's folder",
        )
    return Cohort.from_manifest(path) if key == "manifest" else read_mil_csv(path)


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
        Run name (default ``<model>-<label>-<date>-<time>``).
    heatmaps
        Attention heatmaps to draw (the most confident tested slides).
    overwrite
        Replace an existing run of the same name (its folder is deleted when the
        new run starts); without it :meth:`run` refuses.

    Examples
    --------
    >>> exp = Experiment(cohort, project="project", features="uni", label="subtype",
    ...                  model="abmil", splits=KFold(k=5, val_fraction=0.15))  # doctest: +SKIP
    >>> results = exp.run()  # doctest: +SKIP
    >>> Experiment.load(results.run_dir).predict(new_cohort)  # doctest: +SKIP

    The same run from a YAML file (see :mod:`mil.config`):

    >>> Experiment.from_config("abmil.yaml").run()  # doctest: +SKIP
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
        overwrite: bool = False,
    ) -> None:
        if isinstance(data, Cohort) and (features is None or label is None):
            raise MILError(
                "an experiment on a cohort needs features= (the embedder id) and label=",
                hint="e.g. Experiment(cohort, project=..., features='uni', label='subtype')",
            )
        spec = splits if splits is not None else KFold(k=5, val_fraction=0.15)
        try:
            data_config = DataConfig(
                project=str(ProjectLayout(project).root),
                features=features,
                label=label,
                event=event,
                **_data_files(data),
            )
        except ValueError as exc:
            raise MILError(str(exc), hint="see the Experiment parameters") from exc
        experiment = ExperimentConfig(
            name=name or default_name(model, label),
            task=task,
            task_options=dict(task_options or {}),
            model=model,
            model_kwargs=dict(model_kwargs or {}),
            splits=GIVEN if isinstance(spec, Splits) else spec_to_dict(spec),
            train=train or TrainConfig(),
            heatmaps=heatmaps,
        )
        self._setup(MILRunConfig(data=data_config, experiment=experiment), data, overwrite)
        self._given_splits = spec if isinstance(spec, Splits) else None

    def _setup(
        self,
        config: MILRunConfig,
        data: Cohort | BagSource | None,
        overwrite: bool,
        run_dir: Path | None = None,
    ) -> None:
        self.run_config = config
        self.layout = ProjectLayout(config.data.project)
        self.run_dir = run_dir or self.layout.run(config.name)
        self.data = data
        self.overwrite = overwrite
        self.task: Task | None = None
        self.splits: Splits | None = None
        self.results: ExperimentResults | None = None
        self._given_splits: Splits | None = None
        self._checksums: dict[str, str] = {}

    @classmethod
    def from_config(
        cls,
        source: str | os.PathLike[str] | Mapping[str, Any],
        *,
        name: str | None = None,
        overwrite: bool = False,
    ) -> Experiment:
        """An experiment from a run config file (or its content as a mapping).

        Parameters
        ----------
        source
            A YAML file in the layout of :mod:`mil.config` (relative paths from
            its folder), or the same data as a mapping (relative to the working
            directory).
        name
            Run name replacing the file's.
        overwrite
            Replace an existing run of that name.

        Raises
        ------
        MILError
            For a missing or malformed file, a bad key (named with the file), or a
            manifest or table that does not exist.
        """
        if isinstance(source, Mapping):
            where, config = "the run config", MILRunConfig.from_dict(source)
        else:
            where, config = str(source), MILRunConfig.load(source)
        if name is not None:
            try:
                config = replace(config, experiment=replace(config.experiment, name=name))
            except SlideflowError as exc:
                raise MILError(f"run name {name!r}: {exc.message}", hint=exc.hint) from exc
        self = cls.__new__(cls)
        self._setup(config, _read_data(config.data, where), overwrite)
        return self

    # -- paths and data -----------------------------------------------------------
    @property
    def config(self) -> ExperimentConfig:
        """How the run learns (task, head, splits, trainer)."""
        return self.run_config.experiment

    @property
    def name(self) -> str:
        """The run name (also the store part ``attention/<name>``)."""
        return self.config.name

    def _source(self, data: Cohort | BagSource | None, *, labelled: bool) -> BagSource:
        if data is None:
            raise MILError("this experiment has no data", hint="pass a Cohort or a bag table")
        if not isinstance(data, Cohort):
            return data
        return bags_from_cohort(
            data,
            project=self.layout.root,
            features=str(self.run_config.data.features),
            label=self.run_config.data.label if labelled else None,
            event=self.run_config.data.event if labelled else None,
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
        if self._given_splits is None and self.config.splits == GIVEN:
            raise MILError(
                f"run {self.name} was made with ready-made folds, which its config cannot remake",
                hint="pass splits=mil.Splits.load(<run>/splits.json) to Experiment",
            )
        splits = self._given_splits or spec_from_dict(self.config.splits).make(
            source.ids,
            source.patients,
            _strata(task, source.labels),
            self._columns(self.data, source),
        )
        splits.check(dict(zip(source.ids, source.patients, strict=True)))
        self.splits = splits
        return source, task, splits

    def _existing(self, overwrite: bool) -> bool:
        """Whether a finished run is in the way; refused unless ``overwrite``."""
        if not (self.run_dir / CONFIG_FILE).is_file():
            return False
        if not overwrite:
            raise MILError(
                f"run {self.name!r} already exists at {self.run_dir}",
                hint="choose another name (name=..., sfc mil train --name NAME) or replace it "
                "(overwrite=True, sfc mil train --overwrite)",
            )
        return True

    def run(self, *, overwrite: bool | None = None) -> ExperimentResults:
        """Train and test every fold; write the run folder and attention; return the results.

        Parameters
        ----------
        overwrite
            Replace an existing run of the same name (default: as constructed).

        Raises
        ------
        MILError
            If the run exists (and ``overwrite`` is false), for missing features or
            labels, unusable labels for the task, or splits that leak patients.
        """
        config = self.config
        replacing = self._existing(self.overwrite if overwrite is None else overwrite)
        source, task, splits = self.prepare()
        run_dir = self.run_dir
        if replacing:  # no file of the old run may survive into the new one
            shutil.rmtree(run_dir)
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
                self._write_attention(test, scores, fold=fold.name)
        predictions = pd.concat(frames, ignore_index=True)
        pooled_targets = task.encode(pick(list(predictions["slide_id"])).labels)
        pooled_values = predictions[task.columns].to_numpy()
        pooled = metrics_row(POOLED, task.metrics(pooled_targets, pooled_values), len(predictions))
        metric = headline_metric(task)
        low, high = headline_ci(task, pooled_targets, pooled_values, seed=config.train.seed)
        pooled.update({metric + CI_LOW: low, metric + CI_HIGH: high})
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
        train_config = replace(config.train, seed=config.train.seed + f)
        torch.manual_seed(train_config.seed)
        head = heads.get(config.model)(train.dim, self.task.n_out, **config.model_kwargs)
        model = MILModel(head)
        result = fit(model, self.task, train, val if len(val) else None, train_config)
        path = self.run_dir / fold / "model.safetensors"
        self._checksums[fold] = save_checkpoint(
            path, model, head=config.model, head_kwargs=config.model_kwargs
        )
        return model, result.history

    def _write_attention(self, source: StoreBags, scores: Sequence[np.ndarray], fold: str) -> None:
        """The out-of-fold attention of tested slides (one fold's model each)."""
        assert self.task is not None
        info = attention_record(
            run_dir=str(self.run_dir),
            head=self.config.model,
            task=self.task,
            folds=[fold],
            identity={"run": self.name, "folds": [fold]},
        )
        for store, values in zip(source.stores, scores, strict=True):
            write_attention(store, self.name, values, model_id=source.model_id, info=info)

    def _heatmaps(self, source: BagSource, predictions: pd.DataFrame) -> list[Path]:
        from mil.report import plot_attention

        if not isinstance(source, StoreBags) or self.config.heatmaps == 0:
            return []
        assert self.task is not None
        order = predictions.sort_values(self.task.columns[-1], ascending=False)["slide_id"]
        stores = dict(zip(source.ids, source.stores, strict=True))
        out_dir = self.run_dir / "heatmaps"
        out_dir.mkdir(exist_ok=True)
        shown = list(order[: self.config.heatmaps])
        outlines = self._lesions(shown)
        written = []
        for slide_id in shown:
            written.append(
                plot_attention(
                    stores[slide_id],
                    self.name,
                    out_dir / f"{slide_id}.png",
                    thumbnail=self._thumbnail(slide_id),
                    outline=outlines.get(slide_id),
                )
            )
        return written

    def _lesions(self, slide_ids: Sequence[str]) -> dict[str, MultiPolygon]:
        """Annotated regions of these slides, from the cohort's ``annotation`` column.

        Relative paths are read from the manifest's folder; slides without an
        annotation are left out.
        """
        from mil.localisation import ANNOTATION, regions_from_geojson

        if not isinstance(self.data, Cohort) or ANNOTATION not in self.data.label_columns:
            return {}
        base = Path(self.data.source).parent if self.data.source else Path.cwd()
        files = {}
        for slide_id in slide_ids:
            value = self.data[slide_id].labels.get(ANNOTATION)
            if isinstance(value, str) and value:
                files[slide_id] = base / value
        return regions_from_geojson(files)

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
            "experiment": self.run_config.to_dict(),
            "task": self.task.describe(),
            "bags": {
                "kind": "stores" if isinstance(source, StoreBags) else "bags",
                "n_bags": len(source),
                "feature_dim": source.dim,
            },
            "checkpoints": {
                fold: {"path": f"{fold}/model.safetensors", "sha256": sha}
                for fold, sha in self._checksums.items()
            },
            "versions": package_versions(("torch", "safetensors")),
            **run_context(),
        }
        record = json.loads(json.dumps(record, default=str))  # tuples, numpy scalars → YAML
        (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
        return record

    # -- reloading and predicting -------------------------------------------------
    @classmethod
    def load(
        cls, run_dir: str | os.PathLike[str], data: Cohort | BagSource | None = None
    ) -> Experiment:
        """Reopen a finished run (config, splits, results, checkpoints checked on use).

        Everything is read from where ``run_dir`` is now: the project is the
        folder two levels above it (``<project>/runs/<name>``), so a moved or
        copied project loads and predicts from its new place.

        Raises
        ------
        MILError
            If ``run_dir`` has no ``config.yaml``.
        """
        run_dir = Path(run_dir).expanduser().absolute()
        path = run_dir / CONFIG_FILE
        if not path.is_file():
            raise MILError(
                f"{run_dir} is not a MIL run (no {CONFIG_FILE})",
                hint="give a run folder <project>/runs/<name> (train one with sfc mil train)",
            )
        record = yaml.safe_load(path.read_text())
        config = MILRunConfig.from_dict(record["experiment"], source=str(path))
        here = replace(config.data, project=str(run_dir.parent.parent))
        self = cls.__new__(cls)
        self._setup(replace(config, data=here), data, False, run_dir=run_dir)
        self.task = task_from_dict(record["task"])
        self.splits = Splits.load(run_dir / "splits.json")
        self.results = ExperimentResults.read(run_dir)
        self._checksums = {fold: c["sha256"] for fold, c in record["checkpoints"].items()}
        return self

    def _fold_name(self, fold: str | int) -> str:
        names = list(self._checksums)
        if isinstance(fold, str) and fold not in names and fold.isdigit():
            fold = int(fold)
        if isinstance(fold, int) and 0 <= fold < len(names):
            return names[fold]
        if fold not in names:
            raise MILError(
                f"run {self.name} has no fold {fold!r}",
                hint=f"its folds: {', '.join(names)} (or their index from 0)",
            )
        return str(fold)

    def model(self, fold: str | int) -> MILModel:
        """The trained model of one fold (by name or index), verified against its checksum."""
        name = self._fold_name(fold)
        return load_checkpoint(
            self.run_dir / name / "model.safetensors", sha256=self._checksums[name]
        )

    def checksums(self, fold: str | int | None = None) -> dict[str, str]:
        """SHA-256 of the checkpoint of each fold (or of one fold), by fold name."""
        chosen = list(self._checksums) if fold is None else [self._fold_name(fold)]
        return {name: self._checksums[name] for name in chosen}

    def predictor(self, fold: str | int | None = None) -> Predictor:
        """The trained model(s), loaded and verified once, ready to predict bag after bag.

        Parameters
        ----------
        fold
            One fold's model (name or index); default: every fold's, averaged.

        Raises
        ------
        MILError
            If the experiment has not been run, or has no such fold.
        """
        if self.task is None or not self._checksums:
            raise MILError(
                "the experiment has not been run", hint="call run() or Experiment.load()"
            )
        checksums = self.checksums(fold)
        return Predictor(
            run=self.name,
            run_dir=str(self.run_dir),
            head=self.config.model,
            task=self.task,
            models={name: self.model(name) for name in checksums},
            checksums=checksums,
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
            Also write the scores to each store as ``attention/<run>``, with the
            prediction in the part's record (as the ``predict`` stage does).

        Returns
        -------
        pandas.DataFrame
            ``slide_id``, ``patient_id``, the label columns when ``data`` has them,
            and the task's prediction columns.
        """
        predictor = self.predictor(fold)
        label = self.run_config.data.label
        labelled = not isinstance(data, Cohort) or label in data.label_columns
        source = self._source(data, labelled=False)
        values = np.zeros((len(source), len(predictor.columns)))
        for i in range(len(source)):
            row, scores = predictor.predict(source.features(i))
            values[i] = [row[c] for c in predictor.columns]
            if attention and isinstance(source, StoreBags):
                store = source.stores[i]
                predictor.write(
                    store,
                    scores,
                    row,
                    part=self.name,
                    features=source.model_id,
                    feature_identity=feature_info(store, source.model_id).get("identity"),
                )
        frame = self._frame(source, values, fold=None, labelled=False)
        if labelled and isinstance(data, Cohort):
            frame.insert(2, "label", [data[i].labels.get(label) for i in source.ids])
        return frame
