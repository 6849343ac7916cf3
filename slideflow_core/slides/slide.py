"""The :class:`Slide`: one whole-slide image with its physical resolution.

A ``Slide`` chooses a backend per file (recording why), verifies that pixels
decode, knows its calibration, and serves reads by pyramid level or by physical
resolution. It pickles as a small record and reopens its handle lazily, so it
can be shipped to Ray workers or subprocesses.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slideflow_core.errors import MissingResolutionError, SlideReadError
from slideflow_core.slides.backends import readers
from slideflow_core.slides.protocol import BackendChoice, SlideBackend
from slideflow_core.slides.resolution import (
    DEFAULT_TOLERANCE,
    LevelChoice,
    Resolution,
    choose_level,
    magnification_from_mpp,
    resolution_from_properties,
)

#: ``read(location, level, size)``: a region of a level like :meth:`Slide.read_region`.
RegionRead = Callable[[tuple[int, int], int, tuple[int, int]], np.ndarray]

_PROBE_PX = 64
# Source block side used to build thumbnails of slides with no coarse level.
_THUMBNAIL_BLOCK_PX = 4096


_DOUBLE_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tar.gz")


def slide_id_from_path(path: str | os.PathLike[str]) -> str:
    """The default slide id: the file name without its extension (``a.ome.tif`` → ``a``)."""
    name = Path(str(path).rstrip("/")).name
    for suffix in _DOUBLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _open_backend(path: str, backend: str) -> tuple[SlideBackend, BackendChoice]:
    """Open ``path`` with the forced or first working backend, probing a decode."""
    if not _is_remote(path) and not os.path.exists(path):
        raise SlideReadError(
            f"slide file not found: {path}", hint="check the path (or the manifest's path column)"
        )
    names = readers.names() if backend == "auto" else [backend]
    tried: list[tuple[str, str]] = []
    for name in names:
        entry = readers.entry(name)
        reason = entry.unavailable_reason()
        if reason is None and name == "openslide" and _is_remote(path):
            reason = "OpenSlide reads local files only"
        if reason is not None:
            tried.append((name, reason))
            continue
        handle: SlideBackend | None = None
        try:
            handle = entry.obj(path)
            _probe(handle)
        except Exception as exc:  # any backend failure: record it, try the next one
            tried.append((name, f"{type(exc).__name__}: {exc}".strip()))
            if handle is not None:
                _close_quietly(handle)
            continue
        why = (
            "forced by the caller"
            if backend != "auto"
            else "first backend in order that decoded it"
        )
        return handle, BackendChoice(name, why, tuple(tried))
    detail = "; ".join(f"{n}: {e}" for n, e in tried) or "no backend available"
    hint = (
        "the file may be truncated, corrupt or in an unsupported format; re-copy or re-export it"
        if backend == "auto"
        else "try backend='auto' to fall back to another reader"
    )
    raise SlideReadError(f"cannot read slide {path} ({detail})", hint=hint)


def _probe(handle: SlideBackend) -> None:
    """Decode a small region of the coarsest level so broken files fail at open."""
    dims = handle.level_dimensions
    if not dims or min(dims[0]) <= 0:
        raise ValueError("the slide has no pixels (empty level 0)")
    level = len(dims) - 1
    width, height = dims[level]
    size = (min(width, _PROBE_PX), min(height, _PROBE_PX))
    downsample = handle.level_downsamples[level]
    x = int((width - size[0]) // 2 * downsample)
    y = int((height - size[1]) // 2 * downsample)
    handle.read_region((x, y), level, size)


def _close_quietly(handle: SlideBackend) -> None:
    # Closing a half-open handle must not mask the error that made us close it.
    with contextlib.suppress(Exception):
        handle.close()


class Slide:
    """A whole-slide image read through OpenSlide or TiffSlide.

    Parameters
    ----------
    path
        File path (or an ``s3://``/``http://`` URL, read with TiffSlide).
    backend
        ``"auto"`` (default) tries the registered readers in order and keeps the
        first that decodes the file; a name forces one.
    mpp
        Level-0 µm per pixel overriding the file's calibration, for slides with
        none (or a wrong one).
    slide_id
        Name used in messages and outputs; defaults to the file stem.

    Raises
    ------
    SlideReadError
        If no backend can open and decode the file.

    Examples
    --------
    >>> with Slide("CMU-1-Small-Region.svs") as slide:  # doctest: +SKIP
    ...     tile = slide.read_at((1000, 1000), mpp=0.5, tile_px=256)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        backend: str = "auto",
        mpp: float | None = None,
        slide_id: str | None = None,
    ) -> None:
        self.path = str(path)
        self.slide_id = slide_id or slide_id_from_path(self.path)
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise ValueError(
                f"{self.slide_id}: mpp override must be a positive number, got {mpp!r}"
            )
        self._mpp_override = mpp
        self._requested_backend = backend
        handle, self.backend_choice = _open_backend(self.path, backend)
        self._init_handles(handle)

    def _init_handles(self, handle: SlideBackend | None) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shared: SlideBackend | None = None
        self._all_handles: list[SlideBackend] = []
        if handle is not None:
            self._adopt(handle)

    def _adopt(self, handle: SlideBackend) -> None:
        with self._lock:
            self._all_handles.append(handle)
        if handle.thread_safe:
            self._shared = handle
        else:
            self._local.handle = handle

    @property
    def _handle(self) -> SlideBackend:
        handle = self._shared or getattr(self._local, "handle", None)
        if handle is None:
            # Reopen in this thread/process with the backend chosen at construction.
            handle = readers.get(self.backend_choice.backend)(self.path)
            self._adopt(handle)
        return handle

    # -- pickling: a Slide travels as a record and reopens where it lands ----------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "slide_id": self.slide_id,
            "mpp_override": self._mpp_override,
            "requested_backend": self._requested_backend,
            "backend_choice": self.backend_choice,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.slide_id = state["slide_id"]
        self._mpp_override = state["mpp_override"]
        self._requested_backend = state["requested_backend"]
        self.backend_choice = state["backend_choice"]
        self._init_handles(None)

    # -- geometry -------------------------------------------------------------------
    @cached_property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every pyramid level, finest first."""
        return self._handle.level_dimensions

    @cached_property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""
        return self._handle.level_downsamples

    @property
    def level_count(self) -> int:
        """Number of pyramid levels the backend exposes."""
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self.level_dimensions[0]

    @cached_property
    def properties(self) -> Mapping[str, str]:
        """Backend and vendor properties as strings (``openslide.*``, ``aperio.*``...)."""
        return self._handle.properties

    @property
    def vendor(self) -> str | None:
        """Scanner vendor/format as the backend reports it (``aperio``, ``hamamatsu``...)."""
        props = self.properties
        value = props.get("openslide.vendor") or props.get("tiffslide.vendor")
        return value if value and value != "None" else None

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """Non-empty region ``(x, y, width, height)`` in level-0 px, when the format has one.

        Viewers such as QuPath show coordinates relative to this origin on some
        formats; exports must use the same origin as the viewer.
        """
        props = self.properties
        values = []
        for key in ("bounds-x", "bounds-y", "bounds-width", "bounds-height"):
            raw = props.get(f"openslide.{key}") or props.get(f"tiffslide.{key}")
            if raw is None or raw == "None":
                return None
            values.append(int(float(raw)))
        return (values[0], values[1], values[2], values[3])

    # -- physical resolution -------------------------------------------------------
    @cached_property
    def resolution(self) -> Resolution | None:
        """Level-0 calibration (override first, then file metadata), or ``None``."""
        if self._mpp_override is not None:
            return Resolution(self._mpp_override, self._mpp_override, "user override")
        return resolution_from_properties(self.properties)

    @property
    def has_mpp(self) -> bool:
        """Whether a trustworthy calibration is known."""
        return self.resolution is not None

    @property
    def mpp(self) -> float:
        """Level-0 µm per pixel.

        Raises
        ------
        MissingResolutionError
            If neither the file nor the caller gives a calibration. The value is
            never guessed.
        """
        resolution = self.resolution
        if resolution is None:
            raise MissingResolutionError(
                f"{self.path}: no microns-per-pixel calibration in the file "
                "(missing, or a 72-dpi style placeholder)",
                hint="pass mpp=... (e.g. Slide(path, mpp=0.25)), or fill the manifest's mpp column",
            )
        return resolution.mpp

    @property
    def level_mpp(self) -> tuple[float, ...]:
        """µm per pixel of every level."""
        base = self.mpp
        return tuple(base * d for d in self.level_downsamples)

    @property
    def objective_power(self) -> float | None:
        """Scanner objective power from the metadata, if recorded."""
        props = self.properties
        raw = props.get("openslide.objective-power") or props.get("tiffslide.objective-power")
        try:
            return float(raw) if raw not in (None, "None") else None
        except ValueError:
            return None

    @property
    def magnification(self) -> float:
        """Objective power: from the metadata, else derived from mpp (``10 / mpp``)."""
        return self.objective_power or magnification_from_mpp(self.mpp)

    def best_level_for(self, mpp: float, *, tolerance: float = DEFAULT_TOLERANCE) -> LevelChoice:
        """The pyramid level (and resize) that serves ``mpp``; see :func:`choose_level`."""
        return choose_level(self.level_mpp, mpp, tolerance=tolerance, slide_name=self.path)

    # -- reading -------------------------------------------------------------------
    def read_region(
        self,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
        *,
        fill: int = 255,
    ) -> np.ndarray:
        """Read ``size`` pixels of ``level`` whose top-left is ``location`` (level-0 px).

        Parts outside the slide are filled with ``fill`` (white, like glass)
        whatever the backend would do there. Thread-safe.

        Returns
        -------
        numpy.ndarray
            ``uint8`` array of shape ``(height, width, 3)``.
        """
        if not 0 <= level < self.level_count:
            raise IndexError(
                f"{self.slide_id}: level {level} out of range 0..{self.level_count - 1}"
            )
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"{self.slide_id}: region size must be positive, got {size}")
        x, y = int(location[0]), int(location[1])
        level_w, level_h = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        lx, ly = math.floor(x / downsample), math.floor(y / downsample)
        inside = lx >= 0 and ly >= 0 and lx + width <= level_w and ly + height <= level_h
        if inside:
            return self._backend_read((x, y), level, (width, height))
        out = np.full((height, width, 3), fill, dtype=np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, level_w), min(ly + height, level_h)
        if x1 > x0 and y1 > y0:
            start = (x if lx >= 0 else 0, y if ly >= 0 else 0)
            part = self._backend_read(start, level, (x1 - x0, y1 - y0))
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = part
        return out

    def _backend_read(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        try:
            return self._handle.read_region(location, level, size)
        except Exception as exc:
            raise SlideReadError(
                f"{self.path}: failed to decode region {size[0]}x{size[1]} at {location} "
                f"level {level} with {self.backend_choice.backend} ({type(exc).__name__}: {exc})",
                hint="the file is probably corrupt in this area; re-copy or re-scan it",
            ) from exc

    def read_at(
        self,
        location: tuple[int, int],
        *,
        mpp: float,
        tile_px: int | tuple[int, int],
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> np.ndarray:
        """Read a tile of ``tile_px`` pixels at ``mpp`` µm/px, top-left at ``location``.

        The coarsest level at or finer than ``mpp`` (within ``tolerance``) is read
        and, unless it is already within tolerance, resized once.

        Raises
        ------
        ResolutionError
            If ``mpp`` is finer than level 0 beyond the tolerance.
        MissingResolutionError
            If the slide has no calibration.
        """
        out_w, out_h = (tile_px, tile_px) if isinstance(tile_px, int) else tile_px
        choice = self.best_level_for(mpp, tolerance=tolerance)
        read_w, read_h = choice.read_px(out_w), choice.read_px(out_h)
        region = self.read_region(location, choice.level, (read_w, read_h))
        if (read_w, read_h) == (out_w, out_h):
            return region
        return resize(region, (out_w, out_h))

    # -- associated images and thumbnails ------------------------------------------
    @property
    def associated_images(self) -> tuple[str, ...]:
        """Names of the stored associated images (``thumbnail``, ``label``, ``macro``...)."""
        return self._handle.associated_names

    def associated_image(self, name: str) -> np.ndarray:
        """One associated image as an RGB array; ``KeyError`` lists what exists."""
        if name not in self.associated_images:
            raise KeyError(
                f"{self.slide_id} has no associated image {name!r}; it has: "
                f"{', '.join(self.associated_images) or 'none'}"
            )
        return self._handle.associated_image(name)

    def thumbnail(self, max_px: int = 1024, *, read: RegionRead | None = None) -> np.ndarray:
        """An overview whose longer side is at most ``max_px``, built in bounded memory.

        Parameters
        ----------
        max_px
            Longest side of the overview.
        read
            Reads the blocks instead of :meth:`read_region` (same arguments, same
            pixels), e.g. a direct decoder of the level's JPEG tiles.
        """
        read = read or self.read_region
        width, height = self.dimensions
        scale = min(1.0, max_px / max(width, height))
        out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
        # Coarsest level that still has at least the output's resolution.
        level = max(
            (i for i, (w, h) in enumerate(self.level_dimensions) if w >= out_w and h >= out_h),
            default=0,
        )
        level_w, level_h = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        fx, fy = out_w / level_w, out_h / level_h
        for by in range(0, level_h, _THUMBNAIL_BLOCK_PX):
            for bx in range(0, level_w, _THUMBNAIL_BLOCK_PX):
                bw = min(_THUMBNAIL_BLOCK_PX, level_w - bx)
                bh = min(_THUMBNAIL_BLOCK_PX, level_h - by)
                ox0, oy0 = round(bx * fx), round(by * fy)
                ox1, oy1 = round((bx + bw) * fx), round((by + bh) * fy)
                if ox1 <= ox0 or oy1 <= oy0:
                    continue
                location = (int(bx * downsample), int(by * downsample))
                block = read(location, level, (bw, bh))
                out[oy0:oy1, ox0:ox1] = resize(block, (ox1 - ox0, oy1 - oy0))
        return out

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close every handle this object opened (in any thread)."""
        with self._lock:
            handles, self._all_handles = self._all_handles, []
        for handle in handles:
            _close_quietly(handle)
        self._shared = None
        self._local = threading.local()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = f"{self.resolution.mpp:.4g} µm/px" if self.resolution else "mpp unknown"
        w, h = self.dimensions
        return (
            f"Slide({self.slide_id!r}, {w}x{h}, {self.level_count} levels, {mpp}, "
            f"backend={self.backend_choice.backend})"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (used by ``sfc info`` and provenance)."""
        resolution = self.resolution
        return {
            "slide_id": self.slide_id,
            "path": self.path,
            "backend": self.backend_choice.as_dict(),
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": resolution.mpp if resolution else None,
            "mpp_source": resolution.source if resolution else None,
            "level_mpp": list(self.level_mpp) if resolution else None,
            "objective_power": self.objective_power,
            "magnification": self.magnification if resolution or self.objective_power else None,
            "bounds": list(self.bounds) if self.bounds else None,
            "associated_images": list(self.associated_images),
        }


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB array to ``size`` = ``(width, height)`` by area averaging.

    Area averaging (each output pixel is the area-weighted mean of the input
    pixels under it) is how slide pyramids are built and needs no sharpening
    assumptions. OpenCV's ``INTER_AREA`` computes it exactly (within rounding)
    for any factor and is about 8x faster than Pillow, whose ``BOX`` filter is
    off by a few grey levels on fractional factors.
    """
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(np.ascontiguousarray(image), tuple(size), interpolation=cv2.INTER_AREA)


def open_slide(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    mpp: float | None = None,
    slide_id: str | None = None,
) -> Slide:
    """Open a whole-slide image; see :class:`Slide` for the parameters."""
    return Slide(path, backend=backend, mpp=mpp, slide_id=slide_id)
