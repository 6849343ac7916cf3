"""Which executor runs a cohort: the rule that sends a tiny actor cohort to this process.

An actor stage with at most ``LOCAL_MAX_SLIDES`` slides to do, one CPU actor planned,
and no Ray to join runs in this process with the actor's threads; an explicit executor,
a cluster address, GPUs, several actors or a larger cohort keep the stage's own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from slideflow_core.stages import ActorPlan, Placement, StageDefaults, runner
from slideflow_core.stages.runner import LOCAL_MAX_SLIDES, choose_executor


class Actors(StageDefaults):
    name: ClassVar[str] = "toy"
    executor: ClassVar[str] = "actors"

    def __init__(self, count: int = 1, gpus: float = 0.0) -> None:
        self.count, self.gpus = count, gpus

    def actors(self, resources: Any, n_slides: int) -> ActorPlan:
        return ActorPlan(self.count, num_cpus=2, num_gpus=self.gpus, placement=Placement("cpu", 2))


class Tasks(Actors):
    executor: ClassVar[str] = "tasks"


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


def test_a_running_ray_is_used_rather_than_bypassed(monkeypatch):
    monkeypatch.setattr(runner, "starts_local_instance", lambda address=None: False)
    assert choose_executor(Actors(), None, 1) == ("actors", None)
