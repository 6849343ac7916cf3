"""Device and precision policy for embedders, decided in one place.

``"auto"`` means CUDA when a GPU is visible, otherwise the CPU (Apple ``mps`` is not
chosen automatically: several timm ops fall back to the CPU there and run slower than
on the CPU directly). Precision is bf16 on GPUs that support it, fp16 on older ones and
fp32 on the CPU: autocast to bf16 on the CPU is 6-15x *slower* than fp32 on the
machines we measured, so it is never used there.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from slideflow_core.errors import SlideflowError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(SlideflowError):
    """A requested device or precision cannot be used here."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device an embedder runs on for the request ``device``.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
        or ``"mps"``, or a :class:`torch.device`.
    """
    if isinstance(device, torch.device):
        requested = device
    elif device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    else:
        try:
            requested = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise DeviceError(
                f"unknown device {device!r}", hint="use 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from err
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} requested but no CUDA GPU is visible",
            hint="use device='auto' to fall back to the CPU, or check CUDA_VISIBLE_DEVICES",
        )
    if requested.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} requested but MPS is not available", hint=None)
    return requested


def resolve_precision(device: torch.device, precision: str | None = None) -> str:
    """The compute precision on ``device``: the request if valid, else the policy default."""
    if precision is None:
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in PRECISIONS:
        raise DeviceError(
            f"unknown precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    if precision != "fp32" and device.type != "cuda":
        raise DeviceError(
            f"precision {precision!r} is only used on CUDA, not on {device.type}",
            hint="leave precision unset (fp32 on the CPU: autocast there is slower, not faster)",
        )
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
