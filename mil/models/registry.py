"""The MIL head registry: ``create_head(name, in_dim=, n_out=, **kw)`` and ``list_heads()``."""

from __future__ import annotations

from typing import Any

from mil.models.base import MILHead
from slideflow_core.registry import Registry

heads: Registry[type[MILHead]] = Registry("MIL head")


def create_head(name: str, *, in_dim: int, n_out: int, **kwargs: Any) -> MILHead:
    """Build the head registered as ``name``.

    Parameters
    ----------
    name
        One of :func:`list_heads` (``"abmil"``, ``"transmil"``...).
    in_dim
        Feature dimension of the instances.
    n_out
        Number of outputs (classes; 1 for regression and Cox survival; time bins).
    **kwargs
        Head options (``hidden_dim``, ``dropout``, ``k_sample``...).
    """
    return heads.get(name)(in_dim, n_out, **kwargs)


def list_heads() -> list[dict[str, Any]]:
    """Every head with its availability and metadata (paper, auxiliary loss...)."""
    return heads.list_entries()
