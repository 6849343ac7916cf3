"""The core runner drives any stage the same way in every executor.

A toy stage (a few lines, no slide library) is run locally, on Ray tasks and on Ray
actors: every slide ends with one outcome, one bad slide fails alone with its error,
units of one slide may run in parallel and are committed in order, a planned slide
with no unit left is committed, status files and the report are written, a rerun
skips what is complete, and a second run of the same stage on the project is refused
while the first holds its lock.
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from slideflow_core.cohort import ProjectLayout
from slideflow_core.errors import SlideflowError
from slideflow_core.stages import (
    ActorPlan,
    Placement,
    Plan,
    SlideOutcome,
    SlideRef,
    StageDefaults,
    StageError,
    Unit,
    run_cohort,
)
from slideflow_core.stages.runner import stage_lock


def _toy_stage(units_per_slide: int, full_disk_at: str | None = None) -> Any:
    """A stage writing ``<store>/toy.txt`` from its units; slide ``bad`` fails, ``empty`` has
    no unit left. Defined in a function so Ray pickles it by value."""

    class Toy(StageDefaults):
        name: ClassVar[str] = "toy"
        executor: ClassVar[str] = "local"

        def __init__(self, config: dict[str, Any] | None = None) -> None:
            self.config = config or {}

        def part(self) -> str:
            return "toy"

        def done(self, store: str) -> bool:
            return (Path(store) / "toy.txt").is_file()

        def setup(self, placement: Placement | None) -> str:
            return "resource"

        def actors(self, resources: Any, n_slides: int) -> ActorPlan:
            return ActorPlan(2, num_cpus=0.5, placement=Placement("cpu", 1))

        def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan | SlideOutcome:
            assert resource == "resource"
            if slide.slide_id == "bad":
                raise SlideflowError(f"{slide.slide_id} is broken", hint="fix it")
            if self.done(slide.store) and not overwrite:
                return SlideOutcome(slide.slide_id, "skipped", slide.store, n_tiles=3)
            n = 0 if slide.slide_id == "empty" else units_per_slide
            return Plan(slide, tuple(Unit(i, 3, data=f"u{i}") for i in range(n)))

        def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> str:
            time.sleep(0.01 * (len(plan.units) - unit.index))  # later units finish first
            progress(unit.n_tiles)
            return unit.data

        def commit(self, plan: Plan, results: Any, resource: Any) -> SlideOutcome:
            if plan.slide.slide_id == full_disk_at:
                raise OSError(errno.ENOSPC, "No space left on device", plan.slide.store)
            store = Path(plan.slide.store)
            store.mkdir(parents=True, exist_ok=True)
            (store / "toy.txt").write_text(",".join(results))
            return SlideOutcome(
                plan.slide.slide_id, "done", str(store), n_tiles=plan.n_tiles,
                details={"units": list(results)},
            )  # fmt: skip

    return Toy()


IDS = ["a", "bad", "empty", "b"]


def _project(tmp_path: Path) -> Path:
    for slide_id in IDS:
        (tmp_path / "stores" / f"{slide_id}.zarr").mkdir(parents=True)
    return tmp_path


def _check_first_run(report: Any, project: Path, units: int) -> None:
    outcomes = {r.slide_id: r for r in report.results}
    # Every store of the project, by name, whatever finished first.
    assert [r.slide_id for r in report.results] == sorted(IDS)
    assert {s: r.status for s, r in outcomes.items()} == {
        "a": "done", "bad": "failed", "empty": "done", "b": "done"
    }  # fmt: skip
    assert (
        outcomes["bad"].error == "bad is broken hint: fix it" and outcomes["bad"].hint == "fix it"
    )
    expected = ",".join(f"u{i}" for i in range(units))
    assert (project / "stores" / "a.zarr" / "toy.txt").read_text() == expected  # unit order
    assert (project / "stores" / "empty.zarr" / "toy.txt").read_text() == ""
    assert report.tiles_done == 2 * 3 * units
    status = json.loads((project / "status" / "toy" / "bad.json").read_text())
    assert status["status"] == "failed" and "broken" in status["error"]
    summary = json.loads((project / "status" / "toy.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["done", "done", "failed", "done"]
    assert (project / "status" / "toy.csv").read_text().startswith("slide_id,status")
    assert "failed" in str(report) and "bad is broken" in str(report)


def test_local_executor_runs_every_slide_and_resumes(tmp_path):
    project = _project(tmp_path)
    report = run_cohort(_toy_stage(3), project, progress=False)
    _check_first_run(report, project, 3)
    again = run_cohort(_toy_stage(3), project, progress=False)
    assert [r.status for r in again.results] == ["skipped", "skipped", "failed", "skipped"]
    assert again.tiles_done == 0


@pytest.mark.integration
@pytest.mark.parametrize("executor", ["tasks", "actors"])
def test_ray_executors_give_the_same_outcomes(ray_session, tmp_path, executor):
    project = _project(tmp_path)
    units = 3 if executor == "tasks" else 2
    report = run_cohort(_toy_stage(units), project, executor=executor, progress=False)
    _check_first_run(report, project, units)
    assert report.info["executor"].startswith("Ray tasks" if executor == "tasks" else "2 x CPU")


def _task_recording_stage() -> Any:
    """A stage whose commit records the Ray task that planned its slide and those that ran
    its units. Defined in a function so Ray pickles it by value."""

    def task_id() -> str:
        import ray

        return ray.get_runtime_context().get_task_id()

    class Tasks(StageDefaults):
        name: ClassVar[str] = "tasks"
        executor: ClassVar[str] = "tasks"

        def part(self) -> str:
            return "tasks"

        def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan:
            units = tuple(Unit(i, 1) for i in range(3))
            return Plan(slide, units, state=task_id())

        def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> str:
            return task_id()

        def commit(self, plan: Plan, results: Any, resource: Any) -> SlideOutcome:
            details = {"plan": plan.state, "units": list(results)}
            return SlideOutcome(plan.slide.slide_id, "done", plan.slide.store, 3, details=details)

    return Tasks()


@pytest.mark.integration
def test_ray_tasks_run_a_slides_units_in_its_plan_task_until_the_last_slides(ray_session, tmp_path):
    ids = [f"s{i}" for i in range(6)]
    for slide_id in ids:
        (tmp_path / "stores" / f"{slide_id}.zarr").mkdir(parents=True)
    report = run_cohort(_task_recording_stage(), tmp_path, executor="tasks", progress=False)
    assert [r.status for r in report.results] == ["done"] * 6
    whole = [r.slide_id for r in report.results if set(r.details["units"]) == {r.details["plan"]}]
    split = [r.slide_id for r in report.results if r.details["plan"] not in r.details["units"]]
    # Two CPUs: while two or more slides wait, a slide is one task; the last two spread.
    assert sorted(whole) == ids[:4] and sorted(split) == ids[4:]
    units = [u for r in report.results if r.slide_id in split for u in r.details["units"]]
    assert len(set(units)) == len(units)  # one task per unit


def test_unknown_slides_and_executors_fail_clearly(tmp_path):
    project = _project(tmp_path)
    report = run_cohort(_toy_stage(1), project, ["a", "missing", "../x"], progress=False)
    statuses = {r.slide_id: r.status for r in report.results}
    assert statuses == {"a": "done", "missing": "failed", "../x": "failed"}
    assert "no store" in report.outcome("missing").error
    with pytest.raises(StageError, match="unknown executor"):
        run_cohort(_toy_stage(1), project, executor="threads")
    with pytest.raises(StageError, match="no stores folder"):
        run_cohort(_toy_stage(1), tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()  # a mistyped project makes no folder


def test_a_second_run_of_the_same_stage_is_refused_at_once(tmp_path):
    project = _project(tmp_path)
    stage = _toy_stage(1)
    with stage_lock(ProjectLayout(project), stage):
        with pytest.raises(StageError, match="another toy run") as caught:
            run_cohort(stage, project, progress=False)
        assert "pid" in str(caught.value)
    assert run_cohort(stage, project, progress=False).results  # free again afterwards


@pytest.mark.parametrize(
    "executor", ["local", pytest.param("tasks", marks=pytest.mark.integration)]
)
def test_a_full_disk_fails_its_slide_plainly_and_starts_no_other(tmp_path, executor, request):
    if executor == "tasks":
        request.getfixturevalue("ray_session")
    project = _project(tmp_path)
    stage = _toy_stage(1, full_disk_at="a")
    report = run_cohort(stage, project, executor=executor, max_in_flight=1, progress=False)
    full = report.outcome("a")
    assert full.status == "failed" and full.disk_full
    assert full.error.startswith("the disk is full (No space left on device writing")
    assert "larger disk" in full.hint
    blocked = [r for r in report.results if r.status == "blocked"]
    assert blocked and all("disk filled up while a was written" in r.error for r in blocked)
    assert {r.status for r in report.results} <= {"failed", "blocked", "done"}
    assert not (project / "stores" / "a.zarr" / "toy.txt").exists()
    assert json.loads((project / "status" / "toy" / "a.json").read_text())["status"] == "failed"


def test_reports_never_print_a_slide_ids_terminal_escapes():
    from slideflow_core.stages import CohortReport

    hostile = "\x1b[31mred\x07"
    failed = SlideOutcome(hostile, "failed", error=f"cannot read {hostile}")
    text = str(CohortReport("toy", "toy", (failed,), 1.0, project="p"))
    assert "\x1b" not in text and "\x07" not in text
    assert "red" in text
