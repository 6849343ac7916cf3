"""Splits are patient-grouped, stratified, seeded, saved, and a leak is refused."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mil.errors import MILError
from mil.splits import Fold, FromColumn, KFold, MonteCarlo, Splits


def cohort(n_patients: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, patients, labels = [], [], []
    for p in range(n_patients):
        label = ["a", "b", "c"][p % 3] if p % 5 else "a"  # imbalanced classes
        for s in range(int(rng.integers(1, 4))):  # 1–3 slides per patient
            ids.append(f"p{p}-s{s}")
            patients.append(f"p{p}")
            labels.append(label)
    return ids, patients, labels


@pytest.mark.parametrize(
    "spec", [KFold(k=5, val_fraction=0.2, seed=3), MonteCarlo(n_splits=4, seed=1)]
)
def test_no_patient_is_on_two_sides_and_every_bag_is_placed(spec):
    ids, patients, labels = cohort()
    splits = spec.make(ids, patients, labels)
    patient_of = dict(zip(ids, patients, strict=True))
    splits.check(patient_of)
    for fold in splits.folds:
        sides = [{patient_of[i] for i in getattr(fold, s)} for s in ("train", "val", "test")]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert sorted(fold.train + fold.val + fold.test) == sorted(ids)
        assert fold.val, "a validation side was asked for"


def test_kfold_tests_each_patient_exactly_once_and_stratifies():
    ids, patients, labels = cohort()
    splits = KFold(k=5).make(ids, patients, labels)
    tested = [i for fold in splits.folds for i in fold.test]
    assert sorted(tested) == sorted(ids)
    label_of = dict(zip(ids, labels, strict=True))
    overall = Counter(labels)
    for fold in splits.folds:
        share = Counter(label_of[i] for i in fold.test)
        # every class is in every test fold, near its overall share
        assert set(share) == set(overall)


def test_splits_are_seeded_and_round_trip_through_json(tmp_path):
    ids, patients, labels = cohort()
    a = KFold(k=4, seed=7).make(ids, patients, labels)
    assert a == KFold(k=4, seed=7).make(ids, patients, labels)
    assert a != KFold(k=4, seed=8).make(ids, patients, labels)
    assert Splits.load(a.save(tmp_path / "splits.json")) == a


def test_fixed_split_from_a_manifest_column():
    ids, patients, _ = cohort(6)
    side_of_patient = {
        p: ("train", "val", "test")[i % 3] for i, p in enumerate(dict.fromkeys(patients))
    }
    column = [side_of_patient[p].upper() for p in patients]
    (fold,) = FromColumn(column="split").make(ids, patients, columns={"split": column}).folds
    assert {side_of_patient[p] for i, p in zip(ids, patients, strict=True) if i in fold.test} == {
        "test"
    }
    with pytest.raises(MILError, match="other than train/val/test"):
        FromColumn().make(ids, patients, columns={"split": ["holdout"] * len(ids)})
    with pytest.raises(MILError, match="leak"):  # one patient's slides on two sides
        FromColumn().make(["a", "b"], ["p", "p"], columns={"split": ["train", "test"]})


def test_a_leaking_split_is_refused_and_too_few_patients_explained():
    leaky = Splits(
        method="kfold", params={}, folds=(Fold(name="f", train=("a",), val=(), test=("b",)),)
    )
    with pytest.raises(MILError, match="in train and test"):
        leaky.check({"a": "p1", "b": "p1"})
    with pytest.raises(MILError, match="lower k"):
        KFold(k=5).make(["a", "b"], ["p1", "p2"], ["x", "y"])
