"""MIL heads, one registry: ``create_head(name, in_dim=, n_out=, **kw)``, ``list_heads()``.

Importing this package registers every head: ``mean``, ``max``, ``abmil``,
``gated_abmil``, ``clam_sb``, ``clam_mb``, ``transmil``, ``dsmil``, ``scmil``.
"""

from __future__ import annotations

from mil.models import abmil, clam, dsmil, pooling, scmil, transmil  # noqa: F401 (registration)
from mil.models.base import HeadOutput, MILHead
from mil.models.registry import create_head, heads, list_heads

__all__ = ["HeadOutput", "MILHead", "create_head", "heads", "list_heads"]
