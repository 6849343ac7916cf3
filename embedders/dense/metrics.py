"""Instance segmentation metrics: Dice, AJI, PQ = DQ × SQ and detection F1.

All take two instance maps of one image (``(H, W)`` integers, 0 background, any
positive ids) and compare them the way the nucleus-segmentation literature does
(Kumar et al. 2017 for AJI; Kirillov et al. 2019 / HoVer-Net for PQ with IoU > 0.5
matching, which is unique, so no assignment problem arises; detection F1 pairs
centroids one-to-one within a distance by optimal assignment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Cost of a pair farther apart than the match distance (never chosen over a real pair).
_NO_PAIR = 1e12
# Largest (truth x prediction) id grid counted with a dense histogram.
_DENSE_PAIRS = 1 << 24


def _relabel(instances: np.ndarray) -> tuple[np.ndarray, int]:
    """Ids mapped to 1..n in increasing order (0 stays background), and n."""
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"instance maps must be 2-D, got shape {instances.shape}")
    if not np.issubdtype(instances.dtype, np.integer) or instances.min(initial=0) < 0:
        raise ValueError("instance maps must hold non-negative integers (0 = background)")
    present = np.bincount(instances.ravel()) > 0
    present[0] = False
    lookup = np.zeros(len(present), np.int64)
    n = int(present.sum())
    lookup[present] = np.arange(1, n + 1)
    return lookup[instances], n


@dataclass(frozen=True)
class _Overlaps:
    """Pixel counts of every (truth, prediction) pair that overlaps, and of each instance."""

    truth_area: np.ndarray  # (n_truth + 1,), index 0 unused
    pred_area: np.ndarray  # (n_pred + 1,)
    pair_truth: np.ndarray  # (M,) truth id of each overlapping pair
    pair_pred: np.ndarray  # (M,)
    pair_inter: np.ndarray  # (M,) intersection pixels

    @property
    def pair_iou(self) -> np.ndarray:
        union = self.truth_area[self.pair_truth] + self.pred_area[self.pair_pred] - self.pair_inter
        return self.pair_inter / union


def _overlaps(truth: np.ndarray, pred: np.ndarray) -> _Overlaps:
    if np.shape(truth) != np.shape(pred):
        raise ValueError(f"shapes differ: truth {np.shape(truth)}, prediction {np.shape(pred)}")
    t, n_t = _relabel(truth)
    p, n_p = _relabel(pred)
    both = (t > 0) & (p > 0)
    pair = t[both] * (n_p + 1) + p[both]
    if (n_t + 1) * (n_p + 1) <= _DENSE_PAIRS:  # a histogram beats sorting the pixels
        counts = np.bincount(pair, minlength=(n_t + 1) * (n_p + 1))
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(pair, return_counts=True)
    return _Overlaps(
        truth_area=np.bincount(t.ravel(), minlength=n_t + 1).astype(np.float64),
        pred_area=np.bincount(p.ravel(), minlength=n_p + 1).astype(np.float64),
        pair_truth=keys // (n_p + 1),
        pair_pred=keys % (n_p + 1),
        pair_inter=inter.astype(np.float64),
    )


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Pixel Dice of the foregrounds: ``2|T ∩ P| / (|T| + |P|)`` (1.0 when both are empty)."""
    t, p = np.asarray(truth) > 0, np.asarray(pred) > 0
    total = int(t.sum() + p.sum())
    return 1.0 if total == 0 else 2.0 * float((t & p).sum()) / total


def aji(truth: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017).

    Each true nucleus is paired with the prediction of highest IoU among those it
    overlaps; intersections and unions of the pairs are summed, a true nucleus without
    any overlap adds its area to the union, and so does every prediction never chosen.
    """
    o = _overlaps(truth, pred)
    n_truth = len(o.truth_area) - 1
    if n_truth == 0 and len(o.pred_area) == 1:
        return 1.0
    iou = o.pair_iou
    # Best prediction per truth: sort pairs by (truth, IoU descending), take the first.
    order = np.lexsort((-iou, o.pair_truth))
    first = np.ones(len(order), bool)
    first[1:] = o.pair_truth[order][1:] != o.pair_truth[order][:-1]
    best = order[first]
    inter = o.pair_inter[best]
    chosen_t, chosen_p = o.pair_truth[best], o.pair_pred[best]
    union = o.truth_area[chosen_t] + o.pred_area[chosen_p] - inter
    unmatched_truth = np.setdiff1d(np.arange(1, n_truth + 1), chosen_t)
    unused_pred = np.setdiff1d(np.arange(1, len(o.pred_area)), chosen_p)
    total_union = union.sum() + o.truth_area[unmatched_truth].sum() + o.pred_area[unused_pred].sum()
    return float(inter.sum() / total_union) if total_union else 0.0


@dataclass(frozen=True)
class PanopticQuality:
    """PQ = DQ × SQ with its parts (matches at IoU > 0.5)."""

    pq: float
    dq: float
    sq: float
    tp: int
    fp: int
    fn: int


def panoptic_quality(truth: np.ndarray, pred: np.ndarray) -> PanopticQuality:
    """Panoptic quality: pairs with IoU > 0.5 (unique by construction) are true positives.

    ``DQ = TP / (TP + FP/2 + FN/2)`` (an F1 of detection), ``SQ`` is the mean IoU of
    the true positives, ``PQ = DQ × SQ``. Two empty maps score 1.
    """
    o = _overlaps(truth, pred)
    n_truth, n_pred = len(o.truth_area) - 1, len(o.pred_area) - 1
    iou = o.pair_iou
    matched = iou > 0.5
    tp = int(matched.sum())
    fp, fn = n_pred - tp, n_truth - tp
    if n_truth == 0 and n_pred == 0:
        return PanopticQuality(1.0, 1.0, 1.0, 0, 0, 0)
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[matched].mean()) if tp else 0.0
    return PanopticQuality(dq * sq, dq, sq, tp, fp, fn)


@dataclass(frozen=True)
class Detection:
    """Detection F1 by centroid matching: precision, recall, F1 and the counts."""

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int


def match_points(truth: np.ndarray, pred: np.ndarray, max_distance: float) -> Detection:
    """Pair two point sets one-to-one within ``max_distance`` (minimum total distance).

    Parameters
    ----------
    truth, pred
        ``(N, 2)`` and ``(M, 2)`` coordinates in one unit (pixels).
    max_distance
        Farthest a prediction may lie from the point it detects.
    """
    truth = np.asarray(truth, np.float64).reshape(-1, 2)
    pred = np.asarray(pred, np.float64).reshape(-1, 2)
    if not max_distance > 0:
        raise ValueError(f"max_distance must be positive, got {max_distance}")
    tp = 0
    if len(truth) and len(pred):
        tp = _assign_within(truth, pred, max_distance)
    fp, fn = len(pred) - tp, len(truth) - tp
    precision = tp / len(pred) if len(pred) else float(not len(truth))
    recall = tp / len(truth) if len(truth) else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return Detection(f1, precision, recall, tp, fp, fn)


def _assign_within(truth: np.ndarray, pred: np.ndarray, max_distance: float) -> int:
    """Matches of the optimal assignment restricted to pairs closer than ``max_distance``.

    Candidate pairs come from a spatial index and the assignment is solved per
    connected group of candidates, so it stays small even for whole slides.
    """
    tree = shapely.STRtree(shapely.points(pred))
    ti, pi = tree.query(shapely.points(truth), predicate="dwithin", distance=max_distance)
    if not len(ti):
        return 0
    n_t = len(truth)
    graph = coo_matrix((np.ones(len(ti)), (ti, pi + n_t)), shape=(n_t + len(pred),) * 2)
    _, component = connected_components(graph, directed=False)
    distance = np.linalg.norm(truth[ti] - pred[pi], axis=1)
    group = component[ti]
    matches = 0
    for g in np.unique(group):
        sel = group == g
        t_ids, t_local = np.unique(ti[sel], return_inverse=True)
        p_ids, p_local = np.unique(pi[sel], return_inverse=True)
        cost = np.full((len(t_ids), len(p_ids)), _NO_PAIR)
        cost[t_local, p_local] = distance[sel]
        rows, cols = linear_sum_assignment(cost)
        matches += int((cost[rows, cols] < _NO_PAIR).sum())
    return matches


def centroids(instances: np.ndarray) -> np.ndarray:
    """``(N, 2)`` ``x, y`` pixel-centre centroids of instances 1..N (after relabelling)."""
    labels, n = _relabel(instances)
    if n == 0:
        return np.zeros((0, 2))
    ys, xs = np.indices(labels.shape)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    cx = np.bincount(labels.ravel(), weights=xs.ravel(), minlength=n + 1)[1:] / counts
    cy = np.bincount(labels.ravel(), weights=ys.ravel(), minlength=n + 1)[1:] / counts
    return np.column_stack([cx + 0.5, cy + 0.5])


def detection_f1(truth: np.ndarray, pred: np.ndarray, max_distance_px: float) -> Detection:
    """Detection F1 of two instance maps by centroid matching within ``max_distance_px``."""
    return match_points(centroids(truth), centroids(pred), max_distance_px)


@dataclass(frozen=True)
class TileScores:
    """Every metric for one image."""

    dice: float
    aji: float
    pq: float
    dq: float
    sq: float
    f1: float
    precision: float
    recall: float
    n_truth: int
    n_pred: int
    false_per_mm2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return asdict(self)


def false_detections(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """Predicted nuclei that touch no annotated nucleus, and the non-nuclear pixels.

    Counted on the annotation's background only, these are what a segmenter calls a
    nucleus in stroma, collagen or lumen: the precision measure that does not depend
    on how well touching nuclei are split.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"shapes differ: truth {truth.shape}, prediction {pred.shape}")
    touching = np.unique(pred[(truth > 0) & (pred > 0)])
    found = np.unique(pred[pred > 0])
    return len(np.setdiff1d(found, touching)), int((truth == 0).sum())


def score_tile(
    truth: np.ndarray, pred: np.ndarray, *, max_distance_px: float, mpp: float | None = None
) -> TileScores:
    """Dice, AJI, PQ (with DQ, SQ), detection F1 / precision / recall of one prediction.

    With ``mpp``, also false detections per mm² of the annotation's non-nuclear area
    (:func:`false_detections`).
    """
    pq = panoptic_quality(truth, pred)
    det = detection_f1(truth, pred, max_distance_px)
    per_mm2 = None
    if mpp is not None:
        false, background_px = false_detections(truth, pred)
        per_mm2 = false / max(background_px * mpp**2 / 1e6, 1e-12)
    return TileScores(
        dice=dice(truth, pred),
        aji=aji(truth, pred),
        pq=pq.pq,
        dq=pq.dq,
        sq=pq.sq,
        f1=det.f1,
        n_truth=pq.tp + pq.fn,
        n_pred=pq.tp + pq.fp,
        precision=det.precision,
        recall=det.recall,
        false_per_mm2=per_mm2,
    )
