"""Redoing exactly the damaged parts of a project's stores, with the stages that wrote them.

:func:`repair_project` verifies every store (and every export record), then for
each damaged part finds the registered stage that wrote it (the one whose config,
rebuilt from what the part recorded when it was committed, writes that part; see
:func:`writer_of`), and runs the stage through
:func:`~slideflow_core.stages.run_cohort` on exactly the affected slides, stages
in their registered order. A store whose tiling part (or root metadata) is
damaged is tiled again, which replaces the whole store, so every other part it
held is redone after it. Then everything is verified again.

A part whose config cannot be rebuilt (written before parts recorded it, made
with a model given as code, a training's out-of-fold attention) is listed with
the reason and the command that redoes it by hand. The core imports no stage:
stages are found through the ``sfc.stages`` entry points.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError
from slideflow_core.stages.outcome import CohortReport, SlideOutcome
from slideflow_core.stages.registry import stages
from slideflow_core.stages.runner import run_cohort
from slideflow_core.store import read_backup, read_store_attrs
from slideflow_core.verify import VerifyReport, find_stores, repair, verify, verify_exports

#: The part every other part of a store depends on: redoing it replaces the store.
ROOT_PART = "tiling"


def config_record(config: Any) -> dict[str, Any] | None:
    """A stage config as plain data for a part's record, or ``None`` when it holds code.

    ``sfc verify --repair`` rebuilds the config from this to redo the part; a
    config holding a factory function cannot be written down, so its parts are
    redone by hand.
    """
    data = dataclasses.asdict(config)
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        return None
    return data


@dataclass(frozen=True)
class Redo:
    """One stage run of a repair: a stage, its rebuilt config, and the slides to redo.

    Attributes
    ----------
    stage
        Registered stage name (``tile``, ``embed``...).
    config
        The stage's config as recorded (plain data).
    slides
        ``(slide_id, slide file or None, mpp override or None)`` of each slide.
    parts
        The damaged parts this run redoes (for the report).
    """

    stage: str
    config: Mapping[str, Any]
    slides: tuple[tuple[str, str | None, float | None], ...]
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ByHand:
    """A damaged part that cannot be redone automatically, and why.

    Attributes
    ----------
    slide_id, part
        The slide and its part.
    reason
        Why its stage or config cannot be rebuilt.
    command
        The ``sfc`` command that redoes it with the arguments used before.
    """

    slide_id: str
    part: str
    reason: str
    command: str


@dataclass(frozen=True)
class RepairPlan:
    """What a repair will redo: stage runs in order, and parts left to be redone by hand."""

    runs: tuple[Redo, ...]
    by_hand: tuple[ByHand, ...]


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair_project` found, did, and found afterwards.

    Attributes
    ----------
    before
        The verification that found the damage.
    plan
        What was redone (or left to be redone by hand).
    reports
        One :class:`~slideflow_core.stages.CohortReport` per stage run.
    after
        The verification after the repair.
    """

    before: tuple[VerifyReport, ...]
    plan: RepairPlan
    reports: tuple[CohortReport, ...] = ()
    after: tuple[VerifyReport, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Everything verifies after the repair and no part was left to be redone by hand."""
        return not self.plan.by_hand and all(r.ok for r in self.after)


def _stage_classes() -> list[tuple[str, Any]]:
    """Every available stage class, ``(name, class)``, in registered order."""
    registry = stages()
    return [
        (entry["name"], registry.get(entry["name"]))
        for entry in registry.list_entries()
        if entry["available"]
    ]


def _build_config(cls: Any, data: Mapping[str, Any]) -> Any:
    """A stage's frozen config from plain data (its ``from_dict`` when it has one)."""
    from_dict = getattr(cls.Config, "from_dict", None)
    return from_dict(dict(data)) if from_dict is not None else cls.Config(**data)


def writer_of(
    part: str, record: Mapping[str, Any], classes: Sequence[tuple[str, Any]] | None = None
) -> tuple[str, dict[str, Any]]:
    """The stage that wrote ``part`` and its config (plain data), rebuilt from the part's record.

    The writer is the registered stage whose config, rebuilt from the record,
    writes exactly that part (or, for a pointer part such as ``cells``, a part
    under it). A stage may read its config from a record its own way through a
    ``config_from_record(part, record)`` class method, which returns ``None`` for
    parts it does not write and raises ``ValueError`` for parts of its kind that
    it cannot redo; otherwise the record's ``config`` is used.

    Raises
    ------
    ValueError
        If no installed stage rebuilds a config that writes ``part``, saying why.
    """
    for name, cls in classes if classes is not None else _stage_classes():
        hook = getattr(cls, "config_from_record", None)
        data = hook(part, record) if hook is not None else record.get("config")
        if not isinstance(data, dict):
            continue
        try:
            config = _build_config(cls, data)
            writes = cls(config).part()
        except (SlideflowError, TypeError, ValueError, OSError) as exc:
            if hook is None:  # another stage's config: not this stage's part
                continue
            raise ValueError(f"its recorded {name} config does not build ({exc})") from exc
        if part not in (writes, writes.split("/")[0]):
            continue
        plain = config_record(config)
        if plain is None:
            raise ValueError(f"its {name} config holds code (a model factory)")
        return name, plain
    if "config" in record and record["config"] is None:
        raise ValueError("its config holds code (a model given as a factory) and was not recorded")
    if not isinstance(record.get("config"), dict):
        raise ValueError("its record holds no config (written before parts recorded one)")
    raise ValueError("no installed stage rebuilds its recorded config")


def _slide_of(attrs: Mapping[str, Any], slide_id: str, manifest: pd.DataFrame | None) -> tuple:
    """``(slide_id, path, mpp)`` from a store's recorded slide, else the project's manifest."""
    slide = attrs.get("slide") or {}
    if slide.get("path"):
        return slide_id, str(slide["path"]), slide.get("mpp_override")
    if manifest is not None:
        rows = manifest[manifest["slide_id"].astype(str) == slide_id]
        if len(rows):
            row = rows.iloc[0]
            mpp = row.get("mpp") if "mpp" in rows.columns else None
            return slide_id, str(row["path"]), None if pd.isna(mpp) else float(mpp)
    return slide_id, None, None


def plan_repair(project: str | os.PathLike[str], reports: Sequence[VerifyReport]) -> RepairPlan:
    """The stage runs that redo every damaged part of ``reports`` (and what cannot be redone).

    Parameters
    ----------
    project
        The project the stores belong to (its ``manifest.csv``, when there is one,
        names the slide file of a store whose root metadata is unreadable).
    reports
        From :func:`~slideflow_core.verify.verify` (stores) and
        :func:`~slideflow_core.verify.verify_exports` (export records).
    """
    layout = ProjectLayout(Path(project))
    manifest = pd.read_csv(layout.manifest, dtype=str) if layout.manifest.is_file() else None
    classes = _stage_classes()
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    by_hand: list[ByHand] = []

    def add(slide: tuple, part: str, record: Mapping[str, Any]) -> None:
        try:
            name, config = writer_of(part, record, classes)
        except ValueError as exc:
            by_hand.append(ByHand(slide[0], part, str(exc), redo_command(part)))
            return
        key = (name, json.dumps(config, sort_keys=True))
        run = runs.setdefault(key, {"config": config, "slides": {}, "parts": set()})
        run["slides"][slide[0]] = slide
        run["parts"].add(part)

    redone: set[str] = set()
    for report in reports:
        if report.record is not None or report.ok:
            continue
        slide_id = store_slide_id(report.store)
        if is_uri(os.fspath(report.store)):
            reason = "its store is at a URL; stages build stores in a local project"
            by_hand.append(ByHand(slide_id, "*", reason, "sfc run (the pipeline redoes it)"))
            continue
        if report.error is not None:
            attrs = read_backup(report.store)
            if attrs is None:
                by_hand.append(ByHand(slide_id, ROOT_PART, report.error, redo_command(ROOT_PART)))
                continue
        else:
            attrs = read_store_attrs(report.store)
        parts = {p: info for p, info in attrs.get("parts", {}).items() if info.get("complete")}
        broken = {p.part for p in report.broken}
        if report.error is not None or ROOT_PART in broken:
            broken = set(parts)  # tiling again replaces the store: every part is redone
        slide = _slide_of(attrs, slide_id, manifest)
        if ROOT_PART in broken and slide[1] is None:  # nothing after tiling can be redone
            reason = "the slide file is not recorded (no readable store or manifest.csv)"
            by_hand.extend(ByHand(slide_id, p, reason, redo_command(p)) for p in sorted(broken))
            continue
        redone.add(slide_id)
        for part in sorted(broken):
            add(slide, part, parts[part])
    for report in reports:  # exports: damaged ones, and those of slides redone (if now stale)
        record = report.record
        if record == {}:  # the record itself does not read: its config is lost with it
            slide_id = os.fspath(report.store).rsplit("/", 1)[-1].removesuffix(".export.json")
            by_hand.append(ByHand(slide_id, "exports", str(report.error), redo_command("exports")))
        elif record is not None and is_uri(os.fspath(report.store)) and report.broken:
            reason = "it is at a URL; exports are written in a local project"
            by_hand.append(ByHand(str(record.get("slide_id")), "exports", reason, "sfc run"))
        elif record is not None and (report.broken or record.get("slide_id") in redone):
            add((str(record.get("slide_id")), None, None), "exports", record)
    order = {name: cls.order for name, cls in classes}
    planned = [
        Redo(name, run["config"], tuple(run["slides"].values()), tuple(sorted(run["parts"])))
        for (name, _), run in runs.items()
    ]
    planned.sort(key=lambda r: order.get(r.stage, 100))
    return RepairPlan(tuple(planned), tuple(by_hand))


#: The command that writes each kind of part, by the first name of the part's path.
REDO_COMMANDS = {
    "tiling": "sfc tile",
    "features": "sfc embed",
    "cells": "sfc segment",
    "attention": "sfc mil predict",
    "exports": "sfc export",
}


def redo_command(part: str) -> str:
    """The ``sfc`` command that writes ``part`` (for parts redone by hand)."""
    return REDO_COMMANDS.get(part.split("/")[0], f"the command that wrote {part}")


def store_slide_id(store: str | os.PathLike[str]) -> str:
    """The slide id of a store (``<slide_id>.zarr``, a path or a URL)."""
    return os.fspath(store).rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")


def _cohort(redo: Redo, needs_files: bool) -> Cohort | list[str]:
    if not needs_files:
        return [slide_id for slide_id, _, _ in redo.slides]
    frame = pd.DataFrame(
        [{"slide_id": s, "path": p, "mpp": m} for s, p, m in redo.slides],
        columns=["slide_id", "path", "mpp"],
    )
    return Cohort.from_manifest(frame)


def run_repair(
    project: str | os.PathLike[str],
    plan: RepairPlan,
    reports: Iterable[VerifyReport],
    *,
    executor: str | None = "local",
    progress: bool = False,
) -> list[CohortReport]:
    """Unmark the damaged parts, then run each planned stage on its slides, in order.

    Returns one :class:`~slideflow_core.stages.CohortReport` per stage run; a stage
    that cannot run at all (its MIL run folder is gone) fails each of its slides.
    """
    for report in reports:
        if report.record is not None:
            if report.broken:  # the record goes first: the stage then redoes the files
                report.store.unlink(missing_ok=True)
        elif report.error is None:
            repair(report)
    done = []
    for redo in plan.runs:
        try:
            cls = stages().get(redo.stage)
            stage = cls(_build_config(cls, redo.config))
            cohort = _cohort(redo, stage.needs_slide_files)
            report = run_cohort(stage, project, cohort, executor=executor, progress=progress)
        except SlideflowError as exc:  # the stage cannot run at all (its MIL run is gone...)
            failed = tuple(SlideOutcome.failed(slide_id, exc) for slide_id, _, _ in redo.slides)
            report = CohortReport(redo.stage, ", ".join(redo.parts), failed, 0.0, str(project))
        done.append(report)
    return done


def project_of(target: str | os.PathLike[str]) -> Path:
    """The project of a project folder, or of one of its stores (``<project>/stores/x.zarr``)."""
    path = Path(target).absolute()
    return path.parent.parent if path.parent.name == "stores" else path


def verify_project(target: str | os.PathLike[str], *, deep: bool = False) -> list[VerifyReport]:
    """Verify every store of a project (or one store), and a project's export records."""
    stores = find_stores(target)
    reports = [verify(store, deep=deep) for store in stores]
    if not stores or os.fspath(stores[0]) != os.fspath(target).rstrip("/"):  # a project
        reports += verify_exports(target, deep=deep)
    return reports


def repair_project(
    target: str | os.PathLike[str],
    *,
    deep: bool = False,
    executor: str | None = "local",
    progress: bool = False,
) -> RepairResult:
    """Verify, redo exactly the damaged parts with the stages that wrote them, verify again.

    Parameters
    ----------
    target
        A project folder, or one store of a project.
    deep
        Recompute checksums (finds changed bytes, reads every byte).
    executor
        Where the stages run: ``"local"`` (this process, the default), ``"tasks"``
        or ``"actors"`` (Ray).
    progress
        Show the stages' progress bars.

    Returns
    -------
    RepairResult
        The damage found, the stage runs, and the verification afterwards
        (``ok`` when everything verifies).
    """
    project = project_of(target)
    before = verify_project(target, deep=deep)
    plan = plan_repair(project, before)
    if not any(not r.ok for r in before):
        return RepairResult(tuple(before), plan, (), tuple(before))
    reports = run_repair(project, plan, before, executor=executor, progress=progress)
    after = verify_project(target, deep=deep)
    return RepairResult(tuple(before), plan, tuple(reports), tuple(after))


__all__ = [
    "ByHand",
    "Redo",
    "RepairPlan",
    "RepairResult",
    "config_record",
    "plan_repair",
    "project_of",
    "redo_command",
    "repair_project",
    "run_repair",
    "store_slide_id",
    "verify_project",
    "writer_of",
]
