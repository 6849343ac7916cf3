"""Slide backends (OpenSlide, TiffSlide) and the registry that holds them.

A backend adapts one library to :class:`~slideflow_core.slides.protocol.SlideBackend`.
Backends register in priority order; ``backend="auto"`` tries them in that order.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from slideflow_core.registry import Registry

readers: Registry[type] = Registry("slide reader")


def _needs(module: str) -> Any:
    def check() -> str | None:
        if importlib.util.find_spec(module) is None:
            return f"python package '{module}' is not installed"
        return None

    return check


def _rgb(array: np.ndarray) -> np.ndarray:
    """RGB uint8 from the RGBA/grey/multi-channel arrays backends return."""
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[-1]
    if channels == 4 and array.dtype == np.uint8:
        # OpenSlide returns premultiplied RGBA: composite onto white, min(rgb + 255 - alpha,
        # 255), with OpenCV's saturating add (25x faster than widening to uint16 in NumPy).
        rgb = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGBA2RGB)
        transparency = cv2.bitwise_not(np.ascontiguousarray(array[..., 3]))
        if cv2.countNonZero(transparency):
            cv2.add(rgb, cv2.cvtColor(transparency, cv2.COLOR_GRAY2RGB), dst=rgb)
        return rgb
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels > 3:
        array = array[..., :3]
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        top = float(np.iinfo(array.dtype).max)
    else:
        top = float(np.nanmax(array)) or 1.0
    return np.clip(array.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)


@readers.register(
    "openslide",
    check=_needs("openslide"),
    description="OpenSlide C library (openslide-bin wheel): Aperio, Hamamatsu, DICOM, MIRAX, ...",
)
class OpenSlideBackend:
    """OpenSlide through openslide-python; thread-safe in the C library."""

    name = "openslide"
    thread_safe = True

    def __init__(self, path: str) -> None:
        import openslide

        self._slide = openslide.OpenSlide(path)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._slide.level_dimensions)  # type: ignore[misc]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        return dict(self._slide.properties)

    @property
    def associated_names(self) -> tuple[str, ...]:
        return tuple(self._slide.associated_images.keys())

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        return _rgb(np.asarray(self._slide.read_region(location, level, size)))

    def associated_image(self, name: str) -> np.ndarray:
        return _rgb(np.asarray(self._slide.associated_images[name]))

    def close(self) -> None:
        self._slide.close()


@readers.register(
    "tiffslide",
    check=_needs("tiffslide"),
    description="TiffSlide (tifffile + imagecodecs): SVS, NDPI, generic/OME/QPTIFF, fsspec URLs",
)
class TiffSlideBackend:
    """TiffSlide; handles are used from one thread at a time."""

    name = "tiffslide"
    thread_safe = False

    def __init__(self, path: str) -> None:
        import warnings

        import tiffslide

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._slide = tiffslide.TiffSlide(path)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._slide.level_dimensions)  # type: ignore[misc]

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, str]:
        return {k: str(v) for k, v in self._slide.properties.items() if v is not None}

    @property
    def associated_names(self) -> tuple[str, ...]:
        return tuple(self._slide.associated_images.keys())

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        array = self._slide.read_region(location, level, size, as_array=True, padding=False)
        return _rgb(np.asarray(array))

    def associated_image(self, name: str) -> np.ndarray:
        return _rgb(np.asarray(self._slide.associated_images[name]))

    def close(self) -> None:
        self._slide.close()
