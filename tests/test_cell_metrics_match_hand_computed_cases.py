"""Dice, AJI, PQ = DQ x SQ and detection F1 agree with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from embedders.dense import aji, detection_f1, dice, match_points, panoptic_quality, score_tile

# Truth: nuclei A (ids 1) and B (2), 4 px each. Prediction: 3 is exactly A, 9 is the
# right half of B (IoU 0.5, which is not a PQ match), 8 is a false positive of 2 px.
TRUTH = np.array(
    [
        [1, 1, 0, 0, 2, 2],
        [1, 1, 0, 0, 2, 2],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
)
PRED = np.array(
    [
        [3, 3, 0, 0, 0, 9],
        [3, 3, 0, 0, 0, 9],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 8, 8, 0, 0],
    ]
)


def test_dice_is_twice_the_overlap_over_the_sizes():
    assert dice(TRUTH, PRED) == pytest.approx(2 * 6 / 16)  # |T| = 8, |P| = 8, overlap 6


def test_aji_sums_best_pairs_and_adds_unused_predictions_to_the_union():
    # I 4, U 4; B-9: I 2, U 4; prediction 8 unused: +2 to the union.
    assert aji(TRUTH, PRED) == pytest.approx(6 / 10)


def test_pq_counts_only_iou_above_one_half():
    pq = panoptic_quality(TRUTH, PRED)
    assert (pq.tp, pq.fp, pq.fn) == (1, 2, 1)
    assert pq.dq == pytest.approx(1 / (1 + 0.5 * 2 + 0.5 * 1))
    assert pq.sq == pytest.approx(1.0)
    assert pq.pq == pytest.approx(0.4)


def test_detection_f1_matches_centroids_within_the_distance():
    # Centroids: A (1, 1) ↔ 3 (1, 1); B (5, 1) ↔ 9 (5.5, 1); 8 at (3, 3.5) is extra.
    det = detection_f1(TRUTH, PRED, max_distance_px=1.5)
    assert (det.tp, det.fp, det.fn) == (2, 1, 0)
    assert det.f1 == pytest.approx(0.8)
    assert detection_f1(TRUTH, PRED, max_distance_px=0.25).tp == 1  # B's half is 0.5 away


def test_point_matching_is_optimal_where_greedy_would_lose_a_match():
    # Nearest-first could give p0 to t0 and leave t1 alone; the optimum pairs both.
    truth = np.array([[0.0, 0.0], [2.0, 0.0]])
    pred = np.array([[1.0, 0.0], [-1.2, 0.0]])
    det = match_points(truth, pred, max_distance=1.25)
    assert det.tp == 2 and det.f1 == pytest.approx(1.0)


def test_ids_need_not_be_sequential_and_empty_maps_agree():
    relabelled = np.where(PRED > 0, PRED * 100 + 7, 0)
    assert score_tile(TRUTH, relabelled, max_distance_px=1.5) == score_tile(
        TRUTH, PRED, max_distance_px=1.5
    )
    empty = np.zeros((4, 6), int)
    assert panoptic_quality(empty, empty).pq == 1.0 and dice(empty, empty) == 1.0
    assert panoptic_quality(TRUTH, empty).pq == 0.0 and aji(TRUTH, empty) == 0.0


def test_mismatched_or_negative_maps_are_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        aji(TRUTH, PRED[:, :5])
    with pytest.raises(ValueError, match="non-negative"):
        panoptic_quality(TRUTH, -PRED)


def test_false_detections_count_predictions_touching_no_nucleus_per_mm2():
    from embedders.dense.metrics import false_detections

    # Only 8 lies wholly on the annotation's background (16 of its 24 pixels).
    assert false_detections(TRUTH, PRED) == (1, 16)
    scores = score_tile(TRUTH, PRED, max_distance_px=1.5, mpp=250.0)  # 16 px = 1 mm²
    assert scores.false_per_mm2 == pytest.approx(1.0)
    # 3 and 9 lie within 1.5 px of A's and B's centroids; 8 is the one false positive.
    assert (scores.precision, scores.recall) == pytest.approx((2 / 3, 1.0))
