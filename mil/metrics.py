"""Evaluation metrics for MIL predictions, in plain NumPy.

Classification: AUROC (binary, one-vs-rest per class and macro), AUPRC
(average precision), balanced accuracy, F1, confusion matrix and expected
calibration error, and the balanced-accuracy operating point
(:func:`balanced_threshold`). Survival: Harrell's C-index. Regression: MAE, RMSE, R².
:func:`bootstrap_ci` gives percentile confidence intervals for any of them.
Undefined values (one class only, no comparable pair) are ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of a binary problem (Mann-Whitney U with tied ranks).

    Parameters
    ----------
    y_true
        (N,) 0/1 or boolean truth.
    score
        (N,) higher means more positive.
    """
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.flatnonzero(score[1:] != score[:-1]), len(score) - 1]
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    tpr = np.r_[0.0, tps / max(1, y.sum())]
    fpr = np.r_[0.0, fps / max(1, (~y).sum())]
    return fpr, tpr


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (Σ (Rₙ − Rₙ₋₁) Pₙ)."""
    y = np.asarray(y_true).astype(bool)
    if not y.any():
        return float("nan")
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.flatnonzero(score[1:] != score[:-1]), len(score) - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def balanced_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best balanced accuracy (Youden's J) on labelled scores.

    A bag is called positive when its score is ``>=`` the threshold, taken
    halfway between adjacent distinct scores (ties: the lowest such threshold).
    Used to pick an operating point on training or validation bags for a
    model whose scores are not calibrated to 0.5 (imbalanced training).

    Returns
    -------
    float
        The threshold; ``0.5`` when ``y_true`` holds one class only.
    """
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    if y.all() or not y.any():
        return 0.5
    fpr, tpr = roc_curve(y, score)
    distinct = np.unique(score)[::-1]  # the cut after the i-th highest distinct score
    cuts = np.r_[np.inf, (distinct[:-1] + distinct[1:]) / 2, -np.inf]
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(cuts[best], distinct[-1] - 1, distinct[0] + 1))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return out


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present])) if present.any() else np.nan


def f1_score(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """F1 of class 1 for two classes; macro-averaged F1 over the classes otherwise."""
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)  # = 2tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return float(per_class[1]) if n_classes == 2 else float(per_class.mean())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """F1 averaged over the classes present in ``y_true`` or ``y_pred`` (binary too)."""
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)
    present = denominator > 0
    if not present.any():
        return float("nan")
    return float(np.mean(2 * np.diag(cm)[present] / denominator[present]))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the top-class confidence over ``n_bins`` equal-width bins.

    Σ_b (|b| / N) · |accuracy(b) − confidence(b)|.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index: how often the earlier of a comparable pair has the higher risk.

    A pair is comparable when the shorter time is an event; tied risks count ½.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, dtype=np.float64)
    earlier = (time[:, None] < time[None, :]) & event[:, None]
    if not earlier.any():
        return float("nan")
    higher = risk[:, None] > risk[None, :]
    tied = risk[:, None] == risk[None, :]
    return float((higher[earlier].sum() + 0.5 * tied[earlier].sum()) / earlier.sum())


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Every classification metric for (N,) class indices and (N, K) probabilities.

    Keys: ``auroc`` (binary: of class 1; else the macro mean of ``auroc_<k>``),
    ``auprc`` (same averaging), ``balanced_accuracy``, ``accuracy``, ``f1``, ``macro_f1``,
    ``ece`` and ``confusion`` (nested lists).
    """
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {}
    if k == 2:
        out["auroc"] = auroc(y == 1, probs[:, 1])
        out["auprc"] = average_precision(y == 1, probs[:, 1])
    else:
        per_class = [auroc(y == c, probs[:, c]) for c in range(k)]
        out.update({f"auroc_{c}": v for c, v in enumerate(per_class)})
        out["auroc"] = float(np.nanmean(per_class)) if not np.isnan(per_class).all() else np.nan
        pr = [average_precision(y == c, probs[:, c]) for c in range(k)]
        out["auprc"] = float(np.nanmean(pr)) if not np.isnan(pr).all() else np.nan
    out["balanced_accuracy"] = balanced_accuracy(y, pred, k)
    out["accuracy"] = float(np.mean(pred == y)) if len(y) else np.nan
    out["f1"] = f1_score(y, pred, k)
    out["macro_f1"] = macro_f1(y, pred, k)
    out["ece"] = expected_calibration_error(y, probs)
    out["confusion"] = confusion_matrix(y, pred, k).tolist()
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of predictions."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    residual = y - p
    total = np.sum((y - y.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(residual))),
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "r2": float(1 - np.sum(residual**2) / total) if total > 0 else float("nan"),
    }


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(*arrays)``.

    Rows are resampled with replacement (the same rows in every array);
    resamples where the metric is undefined (``nan``) are dropped.

    Returns
    -------
    tuple of float
        (low, high); ``(nan, nan)`` when no resample gives a value.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        rows = rng.integers(0, n, n)
        value = metric(*(a[rows] for a in arrays))
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
