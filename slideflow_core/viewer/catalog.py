"""Which slides a viewer serves: from a slide file, a slide store, a project or a run folder.

The catalog is fixed when the server starts. Requests name slides by id and
are looked up here, so no part of a URL ever becomes a file path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.export import find_stores
from slideflow_core.geojson.overlays import StoreOverlays
from slideflow_core.slides import slide_id_from_path
from slideflow_core.store import StoreError


class ViewerError(SlideflowError):
    """The viewer cannot serve what it was given."""


@dataclass(frozen=True)
class ServedSlide:
    """One slide the viewer serves, with the store holding its overlays.

    Attributes
    ----------
    slide_id
        Id used in URLs.
    slide_path
        The slide file (read with :func:`slideflow_core.slides.open_slide`).
    mpp
        Level-0 µm/px override recorded at tiling time, if any.
    store
        The slide store, or None when a bare slide file is viewed.
    run
        Run shown first (from a ``runs/<run>`` target).
    """

    slide_id: str
    slide_path: Path
    mpp: float | None = None
    store: Path | None = None
    run: str | None = None


def build_catalog(target: str | os.PathLike[str]) -> dict[str, ServedSlide]:
    """The slides to serve for ``target``: a slide file, a store, a project or ``runs/<run>``.

    Raises
    ------
    ViewerError
        If ``target`` does not exist or holds nothing viewable.
    """
    path = Path(target)
    if not path.exists():
        raise ViewerError(
            f"nothing to view at {target}",
            hint="give a slide file, a <slide>.zarr store, a project folder or runs/<run>",
        )
    if path.is_file():
        return {slide_id_from_path(path): ServedSlide(slide_id_from_path(path), path.resolve())}
    try:
        stores, run = find_stores(path)
    except StoreError as exc:
        raise ViewerError(exc.message, hint=exc.hint) from exc
    catalog = {}
    for store in stores:
        overlays = StoreOverlays(store)
        slide = overlays.slide
        if not slide.get("path"):
            continue
        catalog[overlays.slide_id] = ServedSlide(
            slide_id=overlays.slide_id,
            slide_path=Path(slide["path"]),
            mpp=slide.get("mpp_override"),
            store=store,
            run=run,
        )
    if not catalog:
        raise ViewerError(f"no store at {target} records its slide file", hint="re-tile the slides")
    return catalog
