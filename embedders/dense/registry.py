"""The segmenter registry: ``create_segmenter`` by name, ``list_segmenters`` to see them all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embedders.dense.base import Segmenter
from slideflow_core.registry import Registry

SEGMENTERS: Registry[Callable[..., Segmenter]] = Registry("segmenter")


def register_segmenter(
    name: str, *, check: Callable[[], str | None] | None = None, **meta: Any
) -> Callable[[Callable[..., Segmenter]], Callable[..., Segmenter]]:
    """Decorator registering a segmenter class or factory under ``name`` (metadata as data)."""
    return SEGMENTERS.register(name, check=check, **meta)


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
    return SEGMENTERS.get(name)(**options)


def list_segmenters() -> list[dict[str, Any]]:
    """Every registered segmenter: name, whether it is usable here and why not, metadata."""
    return SEGMENTERS.list_entries()
