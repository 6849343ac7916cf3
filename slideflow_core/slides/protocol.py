"""The contract every slide backend satisfies (structural: no inheritance needed)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SlideBackend(Protocol):
    """An open handle on one slide file, as a backend library exposes it.

    Coordinates are level-0 pixels; ``read_region`` receives only requests that
    lie inside the level (the :class:`~slideflow_core.slides.Slide` clips and pads)
    and returns an RGB ``uint8`` array of shape ``(height, width, 3)``.
    """

    name: str
    #: True when one handle may serve reads from several threads at once.
    thread_safe: bool

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def properties(self) -> Mapping[str, str]: ...

    @property
    def associated_names(self) -> tuple[str, ...]: ...

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray: ...

    def associated_image(self, name: str) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendChoice:
    """Which backend serves a slide and why; written into every output's provenance.

    Attributes
    ----------
    backend
        Name of the backend in use.
    reason
        Why it was chosen ("forced by the caller", "first backend in order that
        opened and decoded the slide").
    tried
        ``(backend, error)`` for every backend tried before it, in order.
    """

    backend: str
    reason: str
    tried: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form for provenance."""
        return {
            "backend": self.backend,
            "reason": self.reason,
            "tried": [list(t) for t in self.tried],
        }
