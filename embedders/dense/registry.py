"""The segmenter registry: ``create_segmenter`` by name, ``list_segmenters`` to see them all.

Every look-up goes through :func:`_segmenters`, which imports the modules that
register the built-in segmenters first, so the registry is complete whichever
module was imported first (``sfc segment`` imports this module directly).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from embedders.dense.base import Segmenter
from slideflow_core.registry import Registry

_SEGMENTERS: Registry[Callable[..., Segmenter]] = Registry("segmenter")
#: Modules whose import registers the built-in segmenters.
_BUILT_IN = (
    "embedders.dense.classical",
    "embedders.dense.learned",
    "embedders.dense.nucleus_net",
    "embedders.dense.adapters",
)


def register_segmenter(
    name: str, *, check: Callable[[], str | None] | None = None, **meta: Any
) -> Callable[[Callable[..., Segmenter]], Callable[..., Segmenter]]:
    """Decorator registering a segmenter class or factory under ``name`` (metadata as data)."""
    return _SEGMENTERS.register(name, check=check, **meta)


def _segmenters() -> Registry[Callable[..., Segmenter]]:
    """The registry with the built-in entries (importing a module twice is a dict look-up)."""
    for module in _BUILT_IN:
        importlib.import_module(module)
    return _SEGMENTERS


def segmenter_names() -> list[str]:
    """Every registered segmenter name, in registration order."""
    return _segmenters().names()


def create_segmenter(name: str, **options: Any) -> Segmenter:
    """Build the segmenter ``name`` with its options.

    Parameters
    ----------
    name
        A registered name (see :func:`list_segmenters`): ``"classical"``, ``"hovernet-head"``,
        ``"stardist"``, ``"cellpose"``.
    **options
        Passed to the segmenter (``mpp=0.25`` for the classical one, ``weights=`` for
        learned heads, ...).

    Raises
    ------
    RegistryError
        If the name is unknown or the segmenter is unavailable here (with the reason).
    """
    return _segmenters().get(name)(**options)


def list_segmenters() -> list[dict[str, Any]]:
    """Every registered segmenter: name, whether it is usable here and why not, metadata."""
    return _segmenters().list_entries()
