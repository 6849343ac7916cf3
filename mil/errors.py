"""Errors of the MIL stage, all :class:`~slideflow_core.errors.SlideflowError` subclasses."""

from __future__ import annotations

from slideflow_core.errors import SlideflowError


class MILError(SlideflowError):
    """A MIL experiment cannot run as asked (labels, splits, data, options)."""


class CheckpointError(MILError):
    """A model checkpoint is missing, corrupt, tampered with or from another model."""
