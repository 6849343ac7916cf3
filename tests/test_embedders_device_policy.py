"""Device and precision policy: CUDA when present, fp32 and no autocast on the CPU."""

from __future__ import annotations

import pytest
import torch

from embedders.device import DeviceError, autocast, resolve_device, resolve_precision


def test_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_precision(torch.device("cpu")) == "fp32"


def test_auto_is_cuda_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_cuda_precision_prefers_bf16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision(torch.device("cuda")) == expected
    assert resolve_precision(torch.device("cuda"), "fp32") == "fp32"


def test_impossible_requests_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU") as info:
        resolve_device("cuda")
    assert "device='auto'" in str(info.value)
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu-please")
    with pytest.raises(DeviceError, match="only used on CUDA"):
        resolve_precision(torch.device("cpu"), "bf16")
    with pytest.raises(DeviceError, match="unknown precision"):
        resolve_precision(torch.device("cpu"), "int8")


def test_no_autocast_in_fp32():
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")


def test_cpu_batch_size_is_the_embedders_own():
    import embedders
    from embedders.run import CPU_BATCH_SIZE, auto_batch_size

    class Plain:  # a factory model that says nothing of its batch size
        device = torch.device("cpu")

    assert auto_batch_size(embedders.create("handcrafted")) == 64
    assert auto_batch_size(embedders.create("timm:test_vit", weights="random")) == 16
    assert auto_batch_size(Plain()) == CPU_BATCH_SIZE
