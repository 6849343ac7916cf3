"""Patient-grouped, stratified, seeded splits: k-fold, Monte-Carlo, or fixed from a column.

Every split assigns whole patients, so no patient's slides are ever on two
sides of a split; :meth:`Splits.check` proves it for any split (also a loaded
or hand-edited one). Strata (class labels, or the event flag for survival)
are balanced by dealing each stratum's shuffled patients across folds.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mil.errors import MILError

SPLIT_VALUES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Fold:
    """One split: bag (slide) ids for training, validation (early stopping) and testing."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Splits:
    """The folds of an experiment and how they were made (saved as ``splits.json``)."""

    method: str
    params: dict[str, Any]
    folds: tuple[Fold, ...]

    def check(self, patients: Mapping[str, str]) -> None:
        """Raise :class:`MILError` if a patient is on two sides of a fold or in two test sets."""
        problems = []
        tested: dict[str, str] = {}
        for fold in self.folds:
            sides = {
                name: {patients[i] for i in getattr(fold, name)}
                for name in ("train", "val", "test")
            }
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = sides[a] & sides[b]
                if shared:
                    problems.append(f"{fold.name}: patients {sorted(shared)[:5]} in {a} and {b}")
            for patient in sides["test"]:
                if patient in tested and self.method != "monte_carlo":
                    problems.append(
                        f"patient {patient!r} tested in {tested[patient]} and {fold.name}"
                    )
                tested.setdefault(patient, fold.name)
        if problems:
            raise MILError(
                f"splits leak patients: {'; '.join(problems[:5])}",
                hint="make splits with patient_id set for every slide",
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON."""
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Splits:
        """Read splits written by :meth:`save`."""
        record = json.loads(Path(path).read_text())
        folds = tuple(
            Fold(name=f["name"], **{k: tuple(f[k]) for k in ("train", "val", "test")})
            for f in record["folds"]
        )
        return cls(method=record["method"], params=record["params"], folds=folds)


def _patient_strata(patients: Sequence[str], strata: Sequence[Any] | None) -> dict[str, str]:
    """Each patient's stratum: the most common one of their bags (ties: first seen)."""
    per_patient: dict[str, Counter[str]] = {}
    for i, patient in enumerate(patients):
        per_patient.setdefault(patient, Counter())[
            str(strata[i]) if strata is not None else ""
        ] += 1
    return {p: c.most_common(1)[0][0] for p, c in per_patient.items()}


def _deal(groups: dict[str, list[str]], n: int, rng: np.random.Generator) -> list[list[str]]:
    """Shuffle each stratum's patients and deal them round-robin into ``n`` piles."""
    piles: list[list[str]] = [[] for _ in range(n)]
    turn = 0
    for stratum in sorted(groups):
        members = list(groups[stratum])
        rng.shuffle(members)
        for patient in members:
            piles[turn % n].append(patient)
            turn += 1
    return piles


def _take(
    patients: list[str], stratum_of: dict[str, str], fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Split patients into (taken ≈ fraction per stratum, rest)."""
    if fraction <= 0:
        return [], list(patients)
    groups: dict[str, list[str]] = {}
    for p in patients:
        groups.setdefault(stratum_of[p], []).append(p)
    taken = []
    for stratum in sorted(groups):
        members = sorted(groups[stratum])
        rng.shuffle(members)
        count = round(len(members) * fraction)
        if count == 0 and len(members) > 1:
            count = 1
        taken += members[:count]
    chosen = set(taken)
    return taken, [p for p in patients if p not in chosen]


def _bags_of(ids: Sequence[str], patients: Sequence[str], chosen: Sequence[str]) -> tuple[str, ...]:
    wanted = set(chosen)
    return tuple(i for i, p in zip(ids, patients, strict=True) if p in wanted)


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


@dataclass(frozen=True, kw_only=True)
class KFold:
    """k-fold cross-validation over patients; validation carved from each training side.

    Parameters
    ----------
    k
        Number of folds (each patient is tested exactly once).
    val_fraction
        Share of each fold's training patients held out for early stopping (0: none).
    seed
        Shuffling seed.
    stratify
        Balance strata (labels) across folds.
    """

    k: int = 5
    val_fraction: float = 0.0
    seed: int = 0
    stratify: bool = True

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be at least 2, got {self.k}")
        _check_fraction("val_fraction", self.val_fraction)

    def make(
        self,
        ids: Sequence[str],
        patients: Sequence[str],
        strata: Sequence[Any] | None = None,
        columns: Mapping[str, Sequence[Any]] | None = None,
    ) -> Splits:
        """Folds for bags ``ids`` of ``patients`` (strata: one per bag)."""
        stratum_of = _patient_strata(patients, strata if self.stratify else None)
        if len(stratum_of) < self.k:
            raise MILError(
                f"{self.k}-fold splits need {self.k} patients or more, not {len(stratum_of)}",
                hint="lower k",
            )
        rng = np.random.default_rng(self.seed)
        groups: dict[str, list[str]] = {}
        for p in sorted(stratum_of):
            groups.setdefault(stratum_of[p], []).append(p)
        piles = _deal(groups, self.k, rng)
        folds = []
        for i, test in enumerate(piles):
            rest = [p for j, pile in enumerate(piles) if j != i for p in pile]
            val, train = _take(rest, stratum_of, self.val_fraction, rng)
            folds.append(
                Fold(
                    name=f"fold-{i}",
                    train=_bags_of(ids, patients, train),
                    val=_bags_of(ids, patients, val),
                    test=_bags_of(ids, patients, test),
                )
            )
        return Splits(method="kfold", params=asdict(self), folds=tuple(folds))


@dataclass(frozen=True, kw_only=True)
class MonteCarlo:
    """Repeated random patient-grouped train/val/test splits."""

    n_splits: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    stratify: bool = True

    def __post_init__(self) -> None:
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be positive, got {self.n_splits}")
        _check_fraction("test_fraction", self.test_fraction)
        _check_fraction("val_fraction", self.val_fraction)

    def make(
        self,
        ids: Sequence[str],
        patients: Sequence[str],
        strata: Sequence[Any] | None = None,
        columns: Mapping[str, Sequence[Any]] | None = None,
    ) -> Splits:
        """Random splits for bags ``ids`` of ``patients``."""
        stratum_of = _patient_strata(patients, strata if self.stratify else None)
        everyone = sorted(stratum_of)
        folds = []
        for r in range(self.n_splits):
            rng = np.random.default_rng([self.seed, r])
            test, rest = _take(everyone, stratum_of, self.test_fraction, rng)
            val, train = _take(rest, stratum_of, self.val_fraction / (1 - self.test_fraction), rng)
            folds.append(
                Fold(
                    name=f"split-{r}",
                    train=_bags_of(ids, patients, train),
                    val=_bags_of(ids, patients, val),
                    test=_bags_of(ids, patients, test),
                )
            )
        return Splits(method="monte_carlo", params=asdict(self), folds=tuple(folds))


@dataclass(frozen=True, kw_only=True)
class FromColumn:
    """A fixed split read from a manifest column holding ``train``/``val``/``test`` per slide."""

    column: str = "split"

    def make(
        self,
        ids: Sequence[str],
        patients: Sequence[str],
        strata: Sequence[Any] | None = None,
        columns: Mapping[str, Sequence[Any]] | None = None,
    ) -> Splits:
        """The split the column describes; unknown values are an error naming them."""
        if columns is None or self.column not in columns:
            raise MILError(
                f"no split column {self.column!r}",
                hint="add a column with train/val/test per slide to the manifest",
            )
        sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        bad = []
        for bag, value in zip(ids, columns[self.column], strict=True):
            side = SPLIT_VALUES.get(str(value).strip().lower())
            if side is None:
                bad.append(f"{bag}={value!r}")
            else:
                sides[side].append(bag)
        if bad:
            raise MILError(
                f"column {self.column!r} has values other than train/val/test: {', '.join(bad[:5])}"
            )
        fold = Fold(name="fixed", **{k: tuple(v) for k, v in sides.items()})
        splits = Splits(method="column", params=asdict(self), folds=(fold,))
        splits.check(dict(zip(ids, patients, strict=True)))
        return splits


SplitSpec = KFold | MonteCarlo | FromColumn
#: Split spec classes by their ``method`` name in a run config.
SPECS: dict[str, type] = {"kfold": KFold, "monte_carlo": MonteCarlo, "column": FromColumn}


def spec_from_dict(record: Mapping[str, Any]) -> SplitSpec:
    """Rebuild a split spec from ``{"method": …, **params}``."""
    record = dict(record)
    return SPECS[record.pop("method")](**record)


def spec_to_dict(spec: SplitSpec) -> dict[str, Any]:
    """A split spec as ``{"method": …, **params}``."""
    method = next(name for name, cls in SPECS.items() if isinstance(spec, cls))
    return {"method": method, **asdict(spec)}
