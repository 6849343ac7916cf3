"""The ``predict`` stage: a trained MIL run applied to every slide store of a project.

Each slide's ``features/<features>`` goes through the run's fold models (their
mean, or one fold's); the per-tile scores go to ``attention/<name>`` with the
slide's prediction and the identity (run, checkpoint checksums, feature part)
in the part's record, so a rerun skips slides already predicted the same way.
:meth:`PredictStage.finish` writes ``<project>/predictions/<name>.csv``, one row
per slide predicted now or before. :func:`predict_cohort` is the stage through
the core runner.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from mil.errors import MILError
from mil.predictor import Predictor, prediction_identity
from slideflow_core.cohort import ProjectLayout
from slideflow_core.features import attention_part, features_part, read_features
from slideflow_core.stages import (
    CohortReport,
    Placement,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    Unit,
    run_cohort,
)
from slideflow_core.stages.runner import CohortLike
from slideflow_core.store import StoreError, part_key, part_state, read_store_attrs

if TYPE_CHECKING:
    from mil.experiment import Experiment

#: Measured with 60 slides of 2,000 tiles × 384 features and a 3-fold ABMIL run on two
#: shared cores: this process took 6.0-6.9 s; Ray tasks 4.4 s once Ray was up (9.2 s in
#: a noisier run) plus 4.5-5.4 s to start it; two CPU actors 2.9-3.9 s after 5.6-8.3 s
#: of start-up (each imports torch and loads the models). A slide is ~0.1 s of reading,
#: three forward passes and an atomic write, so Ray pays once cohorts reach about a
#: hundred slides, and it is where the cluster pipeline runs anyway: tasks by default
#: (``executor="local"`` for a small cohort on a laptop).
DEFAULT_EXECUTOR = "tasks"

#: Folder of the predictions tables, ``<project>/predictions/<name>.csv``.
PREDICTIONS = "predictions"


def predictions_path(project: str | os.PathLike[str], name: str) -> Path:
    """``<project>/predictions/<name>.csv``, the table the stage named ``name`` writes."""
    return ProjectLayout(project).root / PREDICTIONS / f"{part_key(name)}.csv"


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    """What to predict with.

    Parameters
    ----------
    run
        A trained run folder (``<project>/runs/<name>``).
    fold
        One fold's model (name or index); ``None``: the mean of every fold's.
    name
        The store part ``attention/<name>`` and table ``predictions/<name>.csv``
        (default: the run's name).
    """

    run: str
    fold: str | int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            part_key(self.name)


@dataclass(frozen=True)
class RunFacts:
    """What the stage needs to know of a run without loading its models."""

    name: str
    features: str
    label_columns: tuple[str, ...]
    checksums: Mapping[str, str]


def _load_run(run_dir: Path) -> Experiment:
    """The trained run at ``run_dir``, refused unless it was trained on slide features."""
    from mil.experiment import Experiment  # torch: loaded when a run is, not with the stage

    experiment = Experiment.load(run_dir)
    if experiment.run_config.data.features is None:
        raise MILError(
            f"run {experiment.name} was trained on a table of bags, not on slide features",
            hint="predict slides with a run trained on a cohort (data.manifest)",
        )
    return experiment


class PredictStage(StageDefaults):
    """A trained MIL run's predictions and attention for every slide (part ``attention/<run>``)."""

    name: ClassVar[str] = "predict"
    executor: ClassVar[str] = DEFAULT_EXECUTOR
    order: ClassVar[int] = 40
    Config = PredictConfig

    def __init__(self, config: PredictConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run).expanduser().absolute()

    @functools.cached_property
    def facts(self) -> RunFacts:
        """The run's name, feature part, label columns and checkpoint checksums (read once).

        Raises
        ------
        MILError
            If the run folder is missing, is not a MIL run, or has no such fold.
        """
        experiment = _load_run(self.run_dir)
        data = experiment.run_config.data
        return RunFacts(
            name=experiment.name,
            features=str(data.features),
            label_columns=tuple(c for c in (data.label, data.event) if c is not None),
            checksums=experiment.checksums(self.config.fold),
        )

    @classmethod
    def config_from_record(cls, part: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The config that wrote ``attention/<name>``, from its record (run folder, folds used).

        One fold recorded is that fold (for a one-fold run, the same models as
        every fold); several are their mean. ``None`` for another kind of part.

        Raises
        ------
        ValueError
            For the out-of-fold attention a training wrote (no stage redoes it).
        """
        if not part.startswith("attention/") or "run_dir" not in record:
            return None
        if "prediction" not in record:
            raise ValueError(
                f"it is the out-of-fold attention of training run {record['run_dir']}; "
                "run that experiment again to rewrite it"
            )
        folds = list(record.get("folds") or [])
        fold = folds[0] if len(folds) == 1 else None
        return {"run": str(record["run_dir"]), "fold": fold, "name": part.split("/", 1)[1]}

    @property
    def part_name(self) -> str:
        """``config.name``, or the run's name."""
        return self.config.name or self.facts.name

    def part(self) -> str:
        """``attention/<name>``."""
        return attention_part(self.part_name)

    def prepare(self, layout: ProjectLayout) -> None:
        """Fail fast when the run folder is missing, not a MIL run or lacks the fold."""
        self.part()  # reads the run's facts, raising MILError for any of those

    def _identity(self, parts: Mapping[str, Any]) -> dict[str, Any] | None:
        """The identity a slide's prediction would have (from the store's ``parts``
        record), or ``None`` without features."""
        facts = self.facts
        info = parts.get(features_part(facts.features))
        if not info or not info.get("complete"):
            return None
        return prediction_identity(
            facts.name, facts.checksums, facts.features, info.get("identity")
        )

    def done(self, store: str) -> bool:
        """The slide's ``attention/<name>`` is complete, made by this run from its features."""
        try:
            identity = self._identity(read_store_attrs(store).get("parts", {}))
        except StoreError:
            return False
        return identity is not None and part_state(store, self.part(), identity) == "complete"

    def setup(self, placement: Placement | None) -> Predictor:
        """Load the run's fold models once (checksums verified; safetensors, never pickle)."""
        return _load_run(self.run_dir).predictor(self.config.fold)

    def describe(self, resource: Predictor) -> dict[str, Any]:
        """The run, head, folds and feature part used."""
        return {
            "run": resource.run,
            "run_dir": resource.run_dir,
            "head": resource.head,
            "folds": list(resource.models),
            "features": self.facts.features,
        }

    def _row(self, slide: SlideRef, prediction: Mapping[str, Any]) -> dict[str, Any]:
        """The slide's row of the predictions table: its labels, when known, and prediction."""
        labels = {c: slide.labels[c] for c in self.facts.label_columns if c in slide.labels}
        return {**labels, **prediction}

    def plan(self, slide: SlideRef, resource: Predictor, *, overwrite: bool) -> Plan | SlideOutcome:
        """Skip a slide predicted the same way (its prediction read back); else one unit.

        Raises
        ------
        MILError
            If the slide has no feature part of the run's features, or has
            ``attention/<name>`` made differently and ``overwrite`` is False.
        """
        features = self.facts.features
        parts = read_store_attrs(slide.store).get("parts", {})
        identity = self._identity(parts)
        if identity is None:
            raise MILError(
                f"{slide.store} has no complete features/{features}",
                hint=f"embed the slide with {features!r} first (sfc embed --model {features})",
            )
        state = part_state(slide.store, self.part(), identity)
        if state == "complete" and not overwrite:
            info = parts[self.part()]
            return SlideOutcome(
                slide.slide_id,
                "skipped",
                slide.store,
                n_tiles=int(info["n"]),
                details=self._row(slide, info["prediction"]),
            )
        if state == "incompatible" and not overwrite:
            raise MILError(
                f"{slide.store} already has {self.part()} made differently (another run, "
                "checkpoints or features, or the training's out-of-fold attention)",
                hint="pass overwrite=True (--overwrite) to replace it, or name= (--name) "
                "to keep both",
            )
        n = int(parts[features_part(features)]["n"])
        if n == 0:  # an empty bag would get the head's bias as a confident-looking prediction
            raise MILError(
                f"{slide.store} has no tile to predict from (features/{features} has 0 tiles)",
                hint="no tile of the slide passed tissue detection and QC: check it with "
                "`sfc tiles info`, or tile it with other QC thresholds",
            )
        return Plan(slide, (Unit(0, n),))

    def run(self, plan: Plan, unit: Unit, resource: Predictor, progress: Any) -> dict[str, float]:
        """Predict the slide and write its scores and prediction to ``attention/<name>``."""
        features = self.facts.features
        bag = read_features(plan.slide.store, features)
        prediction, scores = resource.predict(bag.features)
        resource.write(
            plan.slide.store,
            scores,
            prediction,
            part=self.part_name,
            features=features,
            feature_identity=bag.info.get("identity"),
        )
        return prediction

    def commit(
        self, plan: Plan, results: Sequence[dict[str, float]], resource: Predictor
    ) -> SlideOutcome:
        """A ``done`` outcome whose details are the slide's row of the predictions table."""
        return replace(
            super().commit(plan, results, resource), details=self._row(plan.slide, results[0])
        )

    def finish(self, layout: ProjectLayout, report: CohortReport) -> None:
        """Write the predictions table: a row per slide done now or skipped (done before).

        Rows of slides this run did not see (an earlier wave of a pipeline, another
        manifest) are kept from the table already there; a slide that failed loses its row.
        Slides given by id (no manifest, as ``sfc verify --repair`` does) keep the
        labels the table had for them.
        """
        rows = [
            {"slide_id": r.slide_id, **r.details}
            for r in report.results
            if r.status in ("done", "skipped")
        ]
        frame = pd.DataFrame(rows, columns=None if rows else ["slide_id"])
        path = predictions_path(layout.root, self.part_name)
        if path.is_file():
            earlier = pd.read_csv(path, dtype={"slide_id": str})
            seen = {r.slide_id for r in report.results}
            kept = [c for c in self.facts.label_columns if c in earlier and c not in frame]
            if kept and len(frame):
                frame = frame.merge(earlier[["slide_id", *kept]], on="slide_id", how="left")
            frame = pd.concat([earlier[~earlier["slide_id"].isin(seen)], frame], ignore_index=True)
        front = ["slide_id", *(c for c in self.facts.label_columns if c in frame)]
        frame = frame[front + [c for c in frame.columns if c not in front]]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)


def predict_cohort(
    run: str | os.PathLike[str],
    project: str | os.PathLike[str],
    cohort: CohortLike = None,
    *,
    fold: str | int | None = None,
    name: str | None = None,
    overwrite: bool = False,
    executor: str | None = None,
    progress: bool = True,
    **runner: Any,
) -> CohortReport:
    """Predict every slide store of ``project`` with the trained run ``run``.

    Parameters
    ----------
    run
        A trained run folder (``<project>/runs/<name>``).
    project
        The project whose stores hold the run's features (may be another project).
    cohort
        Only these slides: a cohort, a manifest path or slide ids (default: every
        store); a manifest's label columns join the predictions table.
    fold, name
        See :class:`PredictConfig`.
    overwrite
        Predict again slides already predicted (or whose part was made differently).
    executor
        ``"tasks"`` (Ray tasks, the default), ``"local"`` (this process, no Ray:
        quicker for a few dozen slides) or ``"actors"``.
    progress
        Show a progress bar.
    **runner
        ``address``, ``num_cpus``, ``max_in_flight`` for Ray.

    Returns
    -------
    CohortReport
        One outcome per slide (``details``: its predictions-table row); the
        table is ``<project>/predictions/<name>.csv``.

    Raises
    ------
    MILError
        If ``run`` is not a trained MIL run over slide features (or lacks the
        fold), or ``project`` has no stores.
    """
    stage = PredictStage(PredictConfig(run=os.fspath(run), fold=fold, name=name))
    stage.part()  # a missing run fails here, before the runner creates any project folder
    stores = ProjectLayout(project).stores_dir
    if not stores.is_dir():
        raise MILError(
            f"{Path(project).absolute()} has no stores folder",
            hint="give the project holding stores/<slide_id>.zarr (tile and embed it first)",
        )
    return run_cohort(
        stage, project, cohort, overwrite=overwrite, executor=executor, progress=progress, **runner
    )
