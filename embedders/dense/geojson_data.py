"""Training tiles from a slide and its QuPath GeoJSON nucleus outlines.

QuPath exports detections (``objectType`` ``detection``) and cells (``cell``, whose
``nucleusGeometry`` is the nucleus) as polygons in level-0 pixels. The slide is cut
into a grid of ``tile_px`` tiles at ``mpp``; every tile holding the centroid of an
outlined nucleus is read and the outlines inside it are rasterised into an instance
map (a later outline wins where two overlap). Annotations (regions) are ignored.
With ``typed=True`` each nucleus's classification becomes its type.

The tiles are only as exhaustive as the outlines: a tile with unoutlined nuclei
teaches the segmenter that they are background, so outline every nucleus in the
areas you export.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from shapely.geometry import Polygon

from embedders.dense.data import AnnotatedTile, AnnotationError
from embedders.dense.morphology import drop_small
from slideflow_core.geojson.read import read_geojson

_NUCLEAR = ("detection", "cell")


def _nuclei(path: Path) -> list[tuple[Polygon, str | None]]:
    """Nucleus polygons of a GeoJSON file with their classification."""
    found = []
    for feature in read_geojson(path):
        if feature.object_type not in _NUCLEAR and feature.object_type is not None:
            continue
        geometry = feature.nucleus if feature.nucleus is not None else feature.geometry
        parts = [geometry] if isinstance(geometry, Polygon) else getattr(geometry, "geoms", [])
        for part in parts:
            if isinstance(part, Polygon) and not part.is_empty:
                found.append((part, feature.classification))
    return found


def geojson_tiles(
    slide: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    *,
    mpp: float = 0.25,
    tile_px: int = 512,
    slide_mpp: float | None = None,
    typed: bool = False,
) -> list[AnnotatedTile]:
    """Annotated tiles of ``slide`` where ``annotations`` (QuPath GeoJSON) outline nuclei.

    Parameters
    ----------
    slide
        The slide the outlines were drawn on.
    annotations
        QuPath GeoJSON export (detections or cells), level-0 pixel coordinates.
    mpp
        µm/px to read the tiles at.
    tile_px
        Tile side, pixels at ``mpp``.
    slide_mpp
        Level-0 µm/px of an uncalibrated slide.
    typed
        Take each nucleus's classification as its type (unclassified ones are refused).

    Raises
    ------
    AnnotationError
        If the file outlines no nucleus, or ``typed`` and a nucleus has no class.
    """
    from slideflow_core.slides import open_slide

    nuclei = _nuclei(Path(annotations))
    if not nuclei:
        raise AnnotationError(
            f"{annotations} outlines no nucleus",
            hint="export detections or cells from QuPath (objectType detection / cell)",
        )
    classes: tuple[str, ...] = ()
    if typed:
        names = {name for _, name in nuclei}
        if None in names:
            raise AnnotationError(
                f"{annotations}: some nuclei have no classification", hint="classify every nucleus"
            )
        classes = tuple(sorted(str(n) for n in names))
    with open_slide(slide, mpp=slide_mpp) as opened:
        scale = mpp / opened.mpp  # level-0 pixels per tile pixel
        side0 = tile_px * scale
        centres = np.array([p.centroid.coords[0] for p, _ in nuclei])
        cells = sorted({(int(x // side0), int(y // side0)) for x, y in centres})
        tiles = []
        for col, row in cells:
            x0, y0 = col * side0, row * side0
            image = np.asarray(opened.read_at((round(x0), round(y0)), mpp=mpp, tile_px=tile_px))[
                ..., :3
            ]
            instances = np.zeros((tile_px, tile_px), np.int32)
            types = np.zeros((tile_px, tile_px), np.int32)
            for index, (polygon, name) in enumerate(nuclei, start=1):
                minx, miny, maxx, maxy = polygon.bounds
                if maxx < x0 or maxy < y0 or minx > x0 + side0 or miny > y0 + side0:
                    continue
                ring = (np.asarray(polygon.exterior.coords) - (x0, y0)) / scale
                points = [np.round(ring).astype(np.int32)]
                cv2.fillPoly(instances, points, index)
                if typed:
                    cv2.fillPoly(types, points, classes.index(str(name)) + 1)
            tiles.append(
                AnnotatedTile(
                    id=f"{Path(slide).stem}-x{round(x0)}-y{round(y0)}",
                    image=np.ascontiguousarray(image),
                    instances=drop_small(instances, 1),  # renumbered 1..n
                    mpp=mpp,
                    types=types if typed else None,
                    classes=classes,
                )
            )
    return tiles
