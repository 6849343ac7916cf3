"""Which executor runs a cohort: the rule that sends a tiny cohort to this process.

A stage with at most ``local_slides`` slides to do and no Ray to join runs in this
process: an actor stage only when it would start one CPU actor (with that actor's
threads), a task stage (tiling's bands) with its units on threads. An explicit
executor, a cluster address, GPUs, several actors or a larger cohort keep the stage's own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from slideflow_core.stages import ActorPlan, Placement, StageDefaults, runner
from slideflow_core.stages.runner import choose_executor

LOCAL_MAX_SLIDES = 4


class Actors(StageDefaults):
    name: ClassVar[str] = "toy"
    executor: ClassVar[str] = "actors"
    local_slides: ClassVar[int] = LOCAL_MAX_SLIDES

    def __init__(self, count: int = 1, gpus: float = 0.0) -> None:
        self.count, self.gpus = count, gpus

    def actors(self, resources: Any, n_slides: int) -> ActorPlan:
        return ActorPlan(self.count, num_cpus=2, num_gpus=self.gpus, placement=Placement("cpu", 2))


class Tasks(Actors):
    executor: ClassVar[str] = "tasks"
    local_slides: ClassVar[int] = 0


class Bands(Tasks):
    concurrent_units: ClassVar[bool] = True
    local_slides: ClassVar[int] = 1


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(runner, "starts_local_instance", lambda address=None: address is None)


def test_one_cpu_actor_for_a_few_slides_runs_here_with_its_threads(no_ray):
    assert choose_executor(Actors(), None, 1) == ("local", Placement("cpu", 2))
    assert choose_executor(Actors(), None, LOCAL_MAX_SLIDES)[0] == "local"


def test_anything_else_keeps_the_stage_executor(no_ray):
    assert choose_executor(Actors(), None, LOCAL_MAX_SLIDES + 1) == ("actors", None)
    assert choose_executor(Actors(), None, 0) == ("actors", None)  # nothing to do
    assert choose_executor(Actors(count=2), None, 2) == ("actors", None)
    assert choose_executor(Actors(gpus=1), None, 1) == ("actors", None)
    assert choose_executor(Actors(), None, 1, address="ray://head:10001") == ("actors", None)
    assert choose_executor(Actors(), "actors", 1) == ("actors", None)  # asked for
    assert choose_executor(Tasks(), None, 1) == ("tasks", None)  # bands run in parallel


def test_the_shipped_stages_say_how_many_slides_run_here():
    from embedders.stage import EmbedStage
    from slideflow_core.geojson.stage import ExportStage
    from tiling.stage import TileStage

    assert (TileStage.local_slides, TileStage.concurrent_units) == (1, True)
    assert (EmbedStage.local_slides, ExportStage.local_slides) == (4, 16)


def test_one_slide_of_a_stage_with_concurrent_units_runs_here_on_threads(no_ray):
    assert choose_executor(Bands(), None, 1) == ("local", None)
    assert choose_executor(Bands(), None, 2) == ("tasks", None)  # slides run in parallel
    assert choose_executor(Bands(), None, 1, address="ray://head:10001") == ("tasks", None)
    assert choose_executor(Bands(), "tasks", 1) == ("tasks", None)


def test_a_running_ray_is_used_rather_than_bypassed(monkeypatch):
    monkeypatch.setattr(runner, "starts_local_instance", lambda address=None: False)
    assert choose_executor(Actors(), None, 1) == ("actors", None)
    assert choose_executor(Bands(), None, 1) == ("tasks", None)
