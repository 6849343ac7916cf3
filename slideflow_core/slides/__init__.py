"""Slide reading with physical resolution: backends, calibration, level choice."""

from __future__ import annotations

from slideflow_core.slides.backends import readers
from slideflow_core.slides.protocol import BackendChoice, SlideBackend
from slideflow_core.slides.resolution import (
    DEFAULT_TOLERANCE,
    LevelChoice,
    Resolution,
    choose_level,
    is_placeholder_mpp,
    magnification_from_mpp,
    parse_magnification,
)
from slideflow_core.slides.slide import Slide, open_slide, resize, slide_id_from_path


def list_readers() -> list[dict[str, object]]:
    """The registered slide backends, in the order ``backend="auto"`` tries them."""
    return readers.list_entries()


__all__ = [
    "DEFAULT_TOLERANCE",
    "BackendChoice",
    "LevelChoice",
    "Resolution",
    "Slide",
    "SlideBackend",
    "choose_level",
    "is_placeholder_mpp",
    "list_readers",
    "magnification_from_mpp",
    "open_slide",
    "parse_magnification",
    "readers",
    "resize",
    "slide_id_from_path",
]
