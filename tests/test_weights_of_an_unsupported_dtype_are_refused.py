"""Weights dtypes: float16/bfloat16 weights load into a float32 network, quantised ones do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import embedders
from embedders.weights import WeightsError

VIT = "timm:test_vit"  # ~0.3 M parameters, every tensor float32
RESNET = "timm:test_resnet"  # batch norms carry int64 num_batches_tracked buffers
TILES = np.random.default_rng(5).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)


def _state(model: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    network = embedders.create(model, weights="random").network
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # differ from the seeded random init
    return {k: v.clone().contiguous() for k, v in network.state_dict().items()}


def _save(state: dict[str, torch.Tensor], path) -> str:
    save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_float_weights_of_any_width_load_cast_to_float32(tmp_path, dtype):
    state = _state(VIT)
    stored = {k: v.to(dtype) for k, v in state.items()}
    loaded = embedders.create(VIT, weights=_save(stored, tmp_path / "w.safetensors"))
    network_state = loaded.network.state_dict()
    assert {v.dtype for v in network_state.values()} == {torch.float32}
    for key, value in stored.items():
        torch.testing.assert_close(network_state[key], value.float(), rtol=0, atol=0)
    reference = embedders.create(VIT, weights="random")
    reference.network.load_state_dict({k: v.float() for k, v in stored.items()})
    np.testing.assert_array_equal(loaded.embed(TILES), reference.embed(TILES))


def test_int8_weights_name_the_file_tensor_and_dtypes(tmp_path):
    state = {k: v.to(torch.int8) for k, v in _state(VIT).items()}
    path = _save(state, tmp_path / "quantised.safetensors")
    with pytest.raises(WeightsError) as info:
        embedders.create(VIT, weights=path)
    error = info.value
    assert path in error.message
    assert f"{len(state)} tensor(s) have a dtype the network cannot load" in error.message
    first = sorted(state)[0]  # safetensors files keep their keys sorted
    assert f"{first}: int8, expected float32" in error.message
    assert all("int8, expected float32" in line for line in error.problems[:-1])
    assert error.problems[-1].endswith("more")  # long lists are cut, with the count
    assert "quantised" in error.hint and "bfloat16" in error.hint


def test_one_stray_tensor_is_named_alone(tmp_path):
    state = _state(VIT)
    state["norm.weight"] = state["norm.weight"].to(torch.float8_e4m3fn)
    with pytest.raises(WeightsError) as info:
        embedders.create(VIT, weights=_save(state, tmp_path / "w.safetensors"))
    (problem,) = info.value.problems
    assert problem == "unsupported dtype: norm.weight: float8_e4m3fn, expected float32"


def test_integer_buffers_keep_their_dtype_and_refuse_floats(tmp_path):
    state = _state(RESNET)
    counters = [k for k, v in state.items() if v.dtype == torch.int64]
    assert counters  # the test needs a network with integer buffers
    half = {k: v.half() if v.is_floating_point() else v.int() for k, v in state.items()}
    loaded = embedders.create(RESNET, weights=_save(half, tmp_path / "half.safetensors"))
    network_state = loaded.network.state_dict()
    assert all(network_state[k].dtype == torch.int64 for k in counters)
    assert all(torch.equal(network_state[k], state[k]) for k in counters)
    state[counters[0]] = state[counters[0]].float()
    with pytest.raises(WeightsError, match=f"{counters[0]}: float32, expected int64"):
        embedders.create(RESNET, weights=_save(state, tmp_path / "float_counter.safetensors"))
