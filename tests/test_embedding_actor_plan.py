"""How many embedder actors start, and what each reserves, from the cluster's resources."""

from __future__ import annotations

import pytest

from embedders.config import EmbedConfig
from embedders.stage import DEFAULT_CPU_ACTORS, EmbedStage
from slideflow_core.errors import SlideflowError


def _plan(resources, n_slides=10, **config):
    return EmbedStage(EmbedConfig(model="handcrafted", **config)).actors(resources, n_slides)


def test_one_actor_per_gpu_when_gpus_exist():
    plan = _plan({"CPU": 32, "GPU": 4})
    assert (plan.count, plan.num_gpus, plan.placement.device) == (4, 1, "cuda")
    assert _plan({"CPU": 32, "GPU": 4}, n_slides=2).count == 2  # two slides
    assert _plan({"CPU": 32, "GPU": 4}, device="cpu").num_gpus == 0


def test_cpu_actors_share_the_cores_as_torch_threads():
    plan = _plan({"CPU": 8})
    assert plan.count == DEFAULT_CPU_ACTORS == 1
    assert (plan.num_cpus, plan.placement.threads, plan.placement.device) == (8, 8, "cpu")
    two = _plan({"CPU": 8}, num_actors=2)
    assert (two.count, two.num_cpus, two.placement.threads) == (2, 4, 4)
    assert _plan({"CPU": 2}, num_actors=5).count == 2  # never more actors than cores
    assert "2 threads" in _plan({"CPU": 2}).describe()


def test_cuda_without_gpus_is_an_error_with_a_fix():
    with pytest.raises(SlideflowError, match="no GPU") as info:
        _plan({"CPU": 2}, device="cuda")
    assert "device='auto'" in info.value.hint
