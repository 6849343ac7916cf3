"""MIL metrics against values worked out by hand (and sklearn when it happens to be installed)."""

from __future__ import annotations

import numpy as np
import pytest

from mil.metrics import (
    auroc,
    average_precision,
    balanced_accuracy,
    balanced_threshold,
    bootstrap_ci,
    classification_metrics,
    concordance_index,
    confusion_matrix,
    expected_calibration_error,
    f1_score,
    macro_f1,
    regression_metrics,
    roc_curve,
)


def test_auroc_counts_ordered_pairs_with_ties_as_half():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4), (0.8>0.1), (0.4=0.4 → ½), (0.4>0.1)
    assert auroc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    assert auroc([1, 0], [0.1, 0.9]) == 0.0
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))


def test_roc_curve_runs_from_origin_to_one():
    fpr, tpr = roc_curve([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert list(fpr) == [0, 0, 0.5, 0.5, 1.0] and list(tpr) == [0, 0.5, 0.5, 1.0, 1.0]


def test_average_precision_is_the_step_sum():
    # ranked: 1 (P=1, R=.5), 0, 1 (P=2/3, R=1) → 0.5·1 + 0.5·2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 1 / 3)


def test_confusion_balanced_accuracy_and_f1():
    y, p = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 0, 2])
    assert confusion_matrix(y, p, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert balanced_accuracy(y, p, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # per-class F1: 2·2/(3+3)=2/3, 2·1/(2+2)=1/2, 1 → macro
    assert f1_score(y, p, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert f1_score(np.array([1, 1, 0]), np.array([1, 0, 0]), 2) == pytest.approx(2 / 3)
    # macro-F1 of two classes averages both: (4/5 + 2/3) / 2
    assert macro_f1(np.array([1, 1, 0, 0]), np.array([1, 1, 1, 0]), 2) == pytest.approx(11 / 15)


def test_ece_of_a_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    # bins: 0.9 (acc 1), 0.8 (acc 0), 0.7 (acc 1), 0.6 (acc 1): each ¼·|acc − conf|
    expected = 0.25 * (0.1 + 0.8 + 0.3 + 0.4)
    assert expected_calibration_error(y, probs) == pytest.approx(expected)


def test_c_index_counts_comparable_pairs_only():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 0, 1, 0])
    risk = np.array([0.9, 0.5, 0.7, 0.1])
    # comparable (earlier has event): (0,1),(0,2),(0,3),(2,3); concordant: all but none → 4/4
    assert concordance_index(time, event, risk) == 1.0
    risk = np.array([0.1, 0.5, 0.7, 0.7])
    # (0,1) no, (0,2) no, (0,3) no, (2,3) tie ½ → 0.5/4
    assert concordance_index(time, event, risk) == pytest.approx(0.125)


def test_multiclass_metrics_are_one_vs_rest_macro():
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 2, 0, 2, 1]] * 0.7 + 0.1
    out = classification_metrics(y, probs)
    assert out["auroc"] == pytest.approx(np.mean([out[f"auroc_{c}"] for c in range(3)]))
    assert out["auroc_0"] == 1.0
    assert out["accuracy"] == pytest.approx(4 / 6)


def test_regression_metrics():
    out = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert out["mae"] == pytest.approx(2 / 3) and out["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert out["r2"] == pytest.approx(1 - 4 / 2)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = y + rng.normal(0, 1.0, 200)
    low, high = bootstrap_ci(lambda a, b: auroc(a, b), y, score, n_resamples=300)
    assert low < auroc(y, score) < high and high - low < 0.2


def test_agrees_with_sklearn_when_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    score = np.round(y * 0.5 + rng.normal(0, 1, 300), 1)  # rounding makes ties
    assert auroc(y, score) == pytest.approx(metrics.roc_auc_score(y, score))
    assert average_precision(y, score) == pytest.approx(metrics.average_precision_score(y, score))


def test_balanced_threshold_is_the_best_youden_cut_halfway_between_scores():
    # 1 positive among 4, all scores under 0.5: the cut lands between the positive and the rest
    assert balanced_threshold([0, 0, 0, 1], [0.01, 0.02, 0.03, 0.04]) == pytest.approx(0.035)
    # best J: call {0.9, 0.7} positive (tpr 1, fpr 0.5) or {0.9} (tpr .5, fpr 0): tie → higher cut
    assert balanced_threshold([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.85)
    y, score = [0, 1, 1, 0, 1, 0, 0], [0.2, 0.6, 0.55, 0.5, 0.7, 0.1, 0.52]
    cut = balanced_threshold(y, score)
    called = (np.asarray(score) >= cut).astype(int)
    assert balanced_accuracy(np.asarray(y), called, 2) == 1.0
    assert balanced_threshold([1, 1], [0.2, 0.3]) == 0.5  # one class: no operating point
