"""What defines a MIL run, as frozen configs: the schema of ``sfc mil train CONFIG.yaml``.

A run config file reads::

    name: tumour-abmil            # optional; default <model>-<label>-<date>-<time>
    data:
      manifest: manifest.csv      # slides (or `bags: musk1.csv` for a classical MIL table)
      project: project            # holds stores/<slide_id>.zarr; the run goes to runs/<name>
      features: handcrafted       # the feature part features/<features> of the stores
      label: label                # label column (the time for survival)
      event: null                 # survival: the event column
    task: classification
    task_options: {}
    model: abmil
    model_kwargs: {hidden_dim: 64}
    splits: {method: kfold, k: 3, val_fraction: 0.15}
    train: {epochs: 30, lr: 0.001, batch_size: 2, standardize: true}
    heatmaps: 2

Relative paths are read from the file's folder. The ``data`` section is a
:class:`DataConfig`, ``train`` a :class:`~mil.train.TrainConfig`, and every other
key a field of :class:`ExperimentConfig`; :class:`MILRunConfig` holds them and is
what a run records (resolved: absolute paths, default name) in its ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mil.errors import MILError
from mil.models import heads
from mil.splits import SPECS, KFold, spec_from_dict, spec_to_dict
from mil.tasks import tasks
from mil.train import TrainConfig
from slideflow_core.errors import SlideflowError
from slideflow_core.store import part_key

T = TypeVar("T")

#: The ``splits`` of an experiment given ready-made folds rather than a spec.
GIVEN: dict[str, Any] = {"method": "given"}


def default_name(model: str, label: str | None) -> str:
    """``<model>-<label>-<date>-<time>``, the name of a run that was not given one."""
    return f"{model}-{label or 'bags'}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """How a run learns: task, head, splits and trainer (the top-level keys of a run config).

    Parameters
    ----------
    name
        Run name: the folder ``runs/<name>`` and the store part ``attention/<name>``.
    task, task_options
        Task name (``classification``, ``regression``, ``survival_cox``,
        ``survival_discrete``) and its options (``classes``, ``n_bins``).
    model, model_kwargs
        Head name (:func:`mil.list_heads`) and its options.
    splits
        Split spec as plain data (``{"method": "kfold", "k": 5, ...}``).
    train
        Trainer settings.
    heatmaps
        Attention heatmaps to draw (the most confident tested slides).
    """

    name: str
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
    model: str = "abmil"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=lambda: spec_to_dict(KFold()))
    train: TrainConfig = field(default_factory=TrainConfig)
    heatmaps: int = 4

    def __post_init__(self) -> None:
        part_key(self.name)  # also a safe folder name
        heads.entry(self.model)
        tasks.entry(self.task)
        if not isinstance(self.heatmaps, int) or self.heatmaps < 0:
            raise ValueError(f"heatmaps must be an integer >= 0, got {self.heatmaps!r}")
        if self.splits != GIVEN:
            spec_from_dict(self.splits)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (the top-level keys of a run config)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where a run's bags come from (the ``data`` section of a run config).

    Parameters
    ----------
    project
        Project folder: ``stores/<slide_id>.zarr`` are read from it and the run is
        written to ``runs/<name>``.
    manifest
        Cohort manifest of the slides (``None`` for bags given in memory).
    bags
        A classical MIL table (``bag_id,label,f0,…``) instead of slides.
    features
        Feature part of the stores (the embedder id); slides only.
    label
        Label column (the time for survival); slides only.
    event
        Event column (1 event, 0 censored) for survival; slides only.
    """

    project: str
    manifest: str | None = None
    bags: str | None = None
    features: str | None = None
    label: str | None = None
    event: str | None = None

    def __post_init__(self) -> None:
        if self.manifest is not None and self.bags is not None:
            raise ValueError("give manifest (slides) or bags (a MIL table), not both")
        slide_keys = {"features": self.features, "label": self.label, "event": self.event}
        if self.bags is not None and any(v is not None for v in slide_keys.values()):
            raise ValueError("features, label and event describe slides; bags carry their label")
        if self.manifest is not None and (self.features is None or self.label is None):
            raise ValueError("slides need features (the embedder id) and label (a column)")

    @property
    def slides(self) -> bool:
        """Whether the bags are slides (stores with features) rather than a table."""
        return self.features is not None

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class MILRunConfig:
    """A whole run config: the data and the experiment (see the module docstring).

    Build one from a file or plain data with :meth:`load` / :meth:`from_dict`;
    :meth:`to_dict` gives the same layout back.
    """

    data: DataConfig
    experiment: ExperimentConfig

    def __post_init__(self) -> None:
        survival = self.experiment.task.startswith("survival")
        if survival and self.data.slides and self.data.event is None:
            raise MILError(
                f"task {self.experiment.task!r} needs event= (the event column) "
                "besides label= (the time)",
                hint="name the event column (1 event, 0 censored)",
            )

    @property
    def name(self) -> str:
        """The run name."""
        return self.experiment.name

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, in the layout of a run config file."""
        experiment = self.experiment.to_dict()
        return {"name": experiment.pop("name"), "data": self.data.to_dict(), **experiment}

    @classmethod
    def from_dict(
        cls,
        values: Mapping[str, Any],
        *,
        source: str = "the run config",
        base: str | os.PathLike[str] | None = None,
    ) -> MILRunConfig:
        """Validate plain data (a parsed run config file) into a config.

        Parameters
        ----------
        values
            The file's content.
        source
            What the data came from, named in errors (the file).
        base
            Folder relative paths are resolved against (default: the working directory).

        Raises
        ------
        MILError
            For a missing or unknown key or a bad value, naming ``source`` and the key.
        """
        base = Path(base or Path.cwd()).expanduser().absolute()
        values = _mapping(values, source, "the file")
        fields = _fields(ExperimentConfig)
        _known(values, {"data", *fields}, source, "")
        if "data" not in values:
            raise MILError(
                f"{source}: no data section",
                hint="add data: {manifest: ..., project: ..., features: ..., label: ...}",
            )
        data_values = _mapping(values["data"], source, "data")
        _known(data_values, _fields(DataConfig), source, "data.")
        if data_values.get("project") is None:
            raise MILError(f"{source}: data.project is missing", hint="name the project folder")
        for key in ("project", "manifest", "bags"):
            if data_values.get(key) is not None:
                data_values[key] = str(base / Path(str(data_values[key])).expanduser())
        data = _build(source, "data", lambda: DataConfig(**data_values))
        options = {k: v for k, v in values.items() if k != "data"}
        if "train" in options:
            train = _mapping(options["train"], source, "train")
            _known(train, _fields(TrainConfig), source, "train.")
            options["train"] = _build(source, "train", lambda: TrainConfig(**train))
        if "splits" in options:
            _check_splits(_mapping(options["splits"], source, "splits"), source)
        for key in ("task_options", "model_kwargs"):
            if key in options:
                options[key] = _mapping(options[key], source, key)
        for key, registry in (("model", heads), ("task", tasks)):
            if key in options:
                _build(source, key, lambda r=registry, k=key: r.entry(options[k]))
        if options.get("name") is None:
            options["name"] = default_name(options.get("model", "abmil"), data.label)
        _build(source, "name", lambda: part_key(str(options["name"])))
        experiment = _build(source, "", lambda: ExperimentConfig(**options))
        return _build(source, "", lambda: cls(data=data, experiment=experiment))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MILRunConfig:
        """Read a run config file (relative paths from the file's folder).

        Raises
        ------
        MILError
            If the file is missing, is not YAML, or has a bad key (named).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise MILError(
                f"no run config file {path}", hint="give the YAML file describing the run"
            )
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise MILError(
                f"{path} is not valid YAML: {' '.join(str(exc).split())}",
                hint="check the indentation and quoting at that line",
            ) from exc
        return cls.from_dict(values, source=str(path), base=path.absolute().parent)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MILError(
            f"{source}: {key} must be a mapping (key: value lines), got {type(value).__name__}",
            hint=f"write {key} as indented key: value lines",
        )
    return dict(value)


def _known(values: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in set(values) - allowed)
    if unknown:
        raise MILError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"{prefix}{k}" for k in unknown),
            hint=f"known keys{' of ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(sorted(allowed)),
        )


def _check_splits(values: dict[str, Any], source: str) -> None:
    if values == GIVEN:  # recorded by a run trained on ready-made folds (in its splits.json)
        return
    method = values.get("method")
    if method not in SPECS:
        raise MILError(
            f"{source}: splits.method is {method!r}",
            hint=f"one of {', '.join(SPECS)}",
        )
    _known(values, {"method", *_fields(SPECS[method])}, source, "splits.")
    _build(source, "splits", lambda: spec_from_dict(values))


def _build(source: str, key: str, make: Callable[[], T]) -> T:
    """``make()``, its errors re-raised as one :class:`MILError` naming the file and key."""
    try:
        return make()
    except (SlideflowError, TypeError, ValueError) as exc:
        message = exc.message if isinstance(exc, SlideflowError) else str(exc)
        where = f"{source}: {key}: " if key else f"{source}: "
        hint = getattr(exc, "hint", None) or f"fix {key or 'the value'} in {source}"
        raise MILError(where + message, hint=hint) from exc
