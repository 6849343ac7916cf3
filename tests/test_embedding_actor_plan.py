"""How many embedder actors start, and what each reserves, from the cluster's resources."""

from __future__ import annotations

import pytest

from embedders.actors import DEFAULT_CPU_ACTORS, plan_actors
from slideflow_core.errors import SlideflowError


def test_one_actor_per_gpu_when_gpus_exist():
    plan = plan_actors({"CPU": 32, "GPU": 4})
    assert (plan.count, plan.num_gpus, plan.device) == (4, 1, "cuda")
    assert plan_actors({"CPU": 32, "GPU": 4}, max_actors=2).count == 2  # two slides
    assert plan_actors({"CPU": 32, "GPU": 4}, device="cpu").num_gpus == 0


def test_cpu_actors_share_the_cores_as_torch_threads():
    plan = plan_actors({"CPU": 8})
    assert plan.count == DEFAULT_CPU_ACTORS == 1
    assert (plan.num_cpus, plan.torch_threads, plan.device) == (8, 8, "cpu")
    two = plan_actors({"CPU": 8}, num_actors=2)
    assert (two.count, two.num_cpus, two.torch_threads) == (2, 4, 4)
    assert plan_actors({"CPU": 2}, num_actors=5).count == 2  # never more actors than cores
    assert "2 torch threads" in plan_actors({"CPU": 2}).describe()


def test_cuda_without_gpus_is_an_error_with_a_fix():
    with pytest.raises(SlideflowError, match="no GPU") as info:
        plan_actors({"CPU": 2}, device="cuda")
    assert "device='auto'" in info.value.hint
    with pytest.raises(ValueError):
        plan_actors({"CPU": 2}, num_actors=0)
