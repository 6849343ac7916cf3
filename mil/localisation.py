"""How well a run's per-tile scores find annotated regions (attention localisation).

A slide-level model is only trusted when its attention points at the lesion. Given
a run's ``attention/<run>`` scores in the slide stores and region annotations
(QuPath GeoJSON polygons, e.g. a pathologist's tumour outline, or the synthetic
writer's ground truth), each tile is labelled by the share of its area inside the
region, and the scores are ranked against those labels per slide (tile-level
AUROC). Tiles that straddle the boundary are left out by default, so a tile
counts as positive only when most of it is lesion and as negative only when none
of it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon

from mil.errors import MILError
from mil.metrics import auroc
from slideflow_core.cohort import ProjectLayout
from slideflow_core.geojson import StoreOverlays, read_labels
from slideflow_core.store import StoreError

#: The manifest column naming a slide's annotation file (QuPath GeoJSON).
ANNOTATION = "annotation"


def tile_overlap(coords: np.ndarray, extent_px: float, region: MultiPolygon) -> np.ndarray:
    """Share of each tile's area inside ``region``.

    Parameters
    ----------
    coords
        ``(n, 2)`` level-0 top-left corners.
    extent_px
        Tile side in level-0 pixels.
    region
        Polygons in level-0 pixels.

    Returns
    -------
    np.ndarray
        ``(n,)`` float64 in [0, 1].
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if region.is_empty or not len(coords):
        return np.zeros(len(coords))
    x, y = coords[:, 0], coords[:, 1]
    boxes = shapely.box(x, y, x + extent_px, y + extent_px)
    shapely.prepare(region)
    hit = shapely.intersects(region, boxes)
    share = np.zeros(len(coords))
    if hit.any():
        share[hit] = shapely.area(shapely.intersection(boxes[hit], region)) / extent_px**2
    return np.clip(share, 0.0, 1.0)


def regions_from_geojson(
    annotations: Mapping[str, str | os.PathLike[str]], classes: Iterable[str] | None = None
) -> dict[str, MultiPolygon]:
    """Slide id → union of the annotation polygons of ``classes`` (all classes if None).

    Raises
    ------
    GeoJSONError
        If a file is malformed or holds no polygon annotation (naming the file).
    """
    wanted = set(classes) if classes is not None else None
    regions = {}
    for slide_id, path in annotations.items():
        by_class = read_labels(path)
        parts = [g for name, g in by_class.items() if wanted is None or name in wanted]
        regions[slide_id] = MultiPolygon(
            [p for g in parts for p in getattr(g, "geoms", [g])]
        ) if parts else MultiPolygon()  # fmt: skip
    return regions


@dataclass(frozen=True)
class Localisation:
    """Tile-level localisation of one run.

    Attributes
    ----------
    per_slide
        One row per annotated slide: ``slide_id``, ``tiles`` (scored and used),
        ``lesion_tiles``, ``auroc`` (NaN when a slide has no lesion or no
        lesion-free tile), ``top_hit`` (the highest-scoring tile is lesion).
    """

    per_slide: pd.DataFrame

    @property
    def mean_auroc(self) -> float:
        """Mean of the per-slide AUROCs (slides where it is defined)."""
        values = self.per_slide["auroc"].dropna()
        return float(values.mean()) if len(values) else float("nan")

    @property
    def top_hit_rate(self) -> float:
        """Share of annotated slides whose top-scoring tile lies in the lesion."""
        return float(self.per_slide["top_hit"].mean()) if len(self.per_slide) else float("nan")

    def __repr__(self) -> str:
        return (
            f"Localisation({len(self.per_slide)} slides, mean tile AUROC {self.mean_auroc:.3f}, "
            f"top tile in lesion {self.top_hit_rate:.0%})"
        )


def localise(
    project: str | os.PathLike[str],
    run: str,
    regions: Mapping[str, MultiPolygon],
    *,
    column: int = -1,
    positive_share: float = 0.5,
    negative_share: float = 0.0,
) -> Localisation:
    """Score a run's per-tile attention against annotated regions, slide by slide.

    Parameters
    ----------
    project
        Project folder with ``stores/<slide_id>.zarr`` holding ``attention/<run>``.
    run
        Run name (the experiment's name).
    regions
        Slide id → lesion polygons in level-0 pixels (see :func:`regions_from_geojson`).
    column
        Score column for heads with several (class-wise attention); default the last
        (the positive class of a binary task).
    positive_share, negative_share
        A tile is lesion when at least ``positive_share`` of it is inside the region,
        lesion-free when at most ``negative_share`` is; tiles in between are left out.

    Raises
    ------
    MILError
        If the thresholds are inconsistent, or naming the slides whose store has no
        ``attention/<run>``.
    """
    if not 0 <= negative_share < positive_share <= 1:
        raise MILError(
            f"need 0 <= negative_share < positive_share <= 1, got {negative_share}, "
            f"{positive_share}"
        )
    layout = ProjectLayout(project)
    rows, missing = [], []
    for slide_id, region in regions.items():
        store = layout.store(slide_id)
        try:
            overlays = StoreOverlays(store)
            scores = overlays.scores(run).values[:, column]
        except StoreError as exc:  # collected and reported together below
            missing.append(f"{slide_id} ({exc.message})")
            continue
        scored = np.isfinite(scores)
        share = tile_overlap(overlays.coords[scored], overlays.tile_extent_px, region)
        values = scores[scored]
        lesion, clear = share >= positive_share, share <= negative_share
        used = lesion | clear
        rows.append({
            "slide_id": slide_id, "tiles": int(used.sum()), "lesion_tiles": int(lesion.sum()),
            "auroc": auroc(lesion[used], values[used]) if used.any() else float("nan"),
            "top_hit": bool(len(values) and share[int(np.argmax(values))] >= positive_share),
        })  # fmt: skip
    if missing:
        raise MILError(
            f"{len(missing)} annotated slide(s) have no scores of run {run!r}: "
            + "; ".join(missing[:5]),
            hint="run the experiment (it writes attention/<run> for every tested slide)",
        )
    columns = ["slide_id", "tiles", "lesion_tiles", "auroc", "top_hit"]
    return Localisation(per_slide=pd.DataFrame(rows, columns=columns))
