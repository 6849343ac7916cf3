"""Duplicate nuclei on tile overlaps, resolved with a shapely STRtree.

Overlapping windows see the nuclei near their shared edges twice, often segmented a
little differently. Two outlines that overlap by more than ``min_overlap`` of the
smaller one are the same nucleus; the copy whose centroid lies in the core region of
the tile that found it wins, and between two such (or two non-core) copies the
larger wins. Resolution is greedy in that priority order, so a chain of overlaps is
settled consistently.
"""

from __future__ import annotations

import numpy as np
import shapely

#: Share of the smaller outline two copies must overlap by to count as one nucleus.
DEFAULT_MIN_OVERLAP = 0.2


def overlapping_pairs(
    polygons: np.ndarray, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of outlines overlapping by more than ``min_overlap``.

    The overlap is the intersection area over the smaller area.
    """
    polygons = np.asarray(polygons, dtype=object)
    if len(polygons) < 2:
        empty = np.empty(0, np.int64)
        return empty, empty
    tree = shapely.STRtree(polygons)
    i, j = tree.query(polygons, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    if not len(i):
        return i, j
    inter = shapely.area(shapely.intersection(polygons[i], polygons[j]))
    smaller = np.minimum(shapely.area(polygons[i]), shapely.area(polygons[j]))
    same = inter > min_overlap * np.maximum(smaller, 1e-9)
    return i[same], j[same]


def resolve_overlaps(
    polygons: np.ndarray, in_core: np.ndarray, *, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> np.ndarray:
    """Which outlines to keep so that every nucleus is reported once.

    Parameters
    ----------
    polygons
        Outlines (level-0 px) found by overlapping tiles.
    in_core
        Whether each centroid lies in the core of the tile that found it.
    min_overlap
        Overlap (intersection over the smaller area) above which two outlines are one nucleus.

    Returns
    -------
    numpy.ndarray
        Boolean keep mask.
    """
    polygons = np.asarray(polygons, dtype=object)
    in_core = np.asarray(in_core, bool)
    keep = np.ones(len(polygons), bool)
    i, j = overlapping_pairs(polygons, min_overlap)
    if not len(i):
        return keep
    # Priority: core copies first, then larger; rank 0 is the strongest claim.
    order = np.lexsort((-shapely.area(polygons), ~in_core))
    rank = np.empty(len(polygons), np.int64)
    rank[order] = np.arange(len(polygons))
    winner = np.where(rank[i] < rank[j], i, j)
    loser = np.where(rank[i] < rank[j], j, i)
    # Visit the contested outlines strongest first; a loser drops only to a kept winner.
    by_loser: dict[int, list[int]] = {}
    for w, lo in zip(winner.tolist(), loser.tolist(), strict=True):
        by_loser.setdefault(lo, []).append(w)
    for node in sorted(by_loser, key=rank.__getitem__):
        if any(keep[w] for w in by_loser[node]):
            keep[node] = False
    return keep
