"""Bags for MIL: from slide stores (streamed) or from classical MIL tables (in memory).

A bag source is an ordered set of bags with an id, a patient, a raw label and
a size; :meth:`features` reads one bag (or some of its rows) when it is
needed, so a cohort is never held in memory: :class:`StoreBags` keeps only
store paths and reads ``features/<model>`` rows from disk per bag.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import zarr

from mil.errors import MILError
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.features import FEATURES, feature_info
from slideflow_core.store import StoreError, use_fast_codecs


class BagSource(Protocol):
    """What the trainer and experiments need from a set of bags."""

    ids: tuple[str, ...]
    patients: tuple[str, ...]
    labels: tuple[Any, ...]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        ...

    def __len__(self) -> int: ...

    def size(self, i: int) -> int:
        """Number of instances of bag ``i``, without reading it."""
        ...

    def features(self, i: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(M, D) float32 features of bag ``i`` (all rows, or sorted ``rows``)."""
        ...

    def subset(self, indices: Sequence[int]) -> BagSource:
        """The bags at ``indices``, in that order."""
        ...


def _check_lengths(ids: Sequence[str], patients: Sequence[str], labels: Sequence[Any]) -> None:
    if not len(ids) == len(patients) == len(labels):
        raise ValueError(f"{len(ids)} ids, {len(patients)} patients and {len(labels)} labels")
    if len(set(ids)) != len(ids):
        raise MILError("bag ids must be unique", hint="give each slide or bag its own id")


@dataclass(frozen=True)
class BagTable:
    """Bags held in memory (classical MIL sets, synthetic tasks).

    Attributes
    ----------
    bags
        One (M_i, D) float32 array per bag.
    labels
        Raw label per bag (class value, number, or ``(time, event)``).
    ids
        Bag ids (strings).
    patients
        Patient per bag (defaults to the bag id).
    source
        The file the bags came from, if any (recorded in the run config).
    """

    bags: tuple[np.ndarray, ...]
    labels: tuple[Any, ...]
    ids: tuple[str, ...]
    patients: tuple[str, ...] = ()
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.patients:
            object.__setattr__(self, "patients", tuple(self.ids))
        _check_lengths(self.ids, self.patients, self.labels)
        dims = {b.shape[1] for b in self.bags if b.ndim == 2}
        if len(dims) > 1 or any(b.ndim != 2 or len(b) == 0 for b in self.bags):
            raise MILError("every bag must be a non-empty (M, D) array with one D")
        if len(self.bags) != len(self.ids):
            raise ValueError(f"{len(self.bags)} bags for {len(self.ids)} ids")

    @classmethod
    def from_arrays(
        cls,
        bags: Sequence[np.ndarray],
        labels: Sequence[Any],
        *,
        ids: Sequence[str] | None = None,
        patients: Sequence[str] | None = None,
        source: str | None = None,
    ) -> BagTable:
        """Bags from arrays; ids default to ``"0"``, ``"1"``, …."""
        ids = [str(i) for i in range(len(bags))] if ids is None else [str(i) for i in ids]
        return cls(
            bags=tuple(np.asarray(b, dtype=np.float32) for b in bags),
            labels=tuple(labels),
            ids=tuple(ids),
            patients=tuple(str(p) for p in patients) if patients is not None else (),
            source=source,
        )

    @property
    def dim(self) -> int:
        return int(self.bags[0].shape[1])

    def __len__(self) -> int:
        return len(self.bags)

    def size(self, i: int) -> int:
        return len(self.bags[i])

    def features(self, i: int, rows: np.ndarray | None = None) -> np.ndarray:
        return self.bags[i] if rows is None else self.bags[i][rows]

    def subset(self, indices: Sequence[int]) -> BagTable:
        pick = list(indices)
        return BagTable(
            bags=tuple(self.bags[i] for i in pick),
            labels=tuple(self.labels[i] for i in pick),
            ids=tuple(self.ids[i] for i in pick),
            patients=tuple(self.patients[i] for i in pick),
            source=self.source,
        )


def read_mil_csv(path: str | os.PathLike[str]) -> BagTable:
    """Load a classical MIL table: ``bag_id,label,f0,…,fN``, one row per instance.

    Any file of that format (optionally gzip-compressed) is accepted; the
    feature count comes from the header. Bags keep the order of first
    appearance; the label must be the same on every row of a bag.

    Raises
    ------
    MILError
        If the header lacks ``bag_id``/``label`` or feature columns, or a bag
        has more than one label.
    """
    path = Path(path)
    frame = pd.read_csv(path)
    features = [c for c in frame.columns if c not in ("bag_id", "label")]
    if list(frame.columns[:2]) != ["bag_id", "label"] or not features:
        raise MILError(
            f"{path}: expected the header bag_id,label,f0,f1,…; found {list(frame.columns[:4])}…",
            hint="one row per instance: bag id, bag label, then the feature values",
        )
    labels_per_bag = frame.groupby("bag_id", sort=False)["label"].nunique()
    mixed = labels_per_bag.index[labels_per_bag > 1].tolist()
    if mixed:
        raise MILError(f"{path}: bags {mixed[:5]} have more than one label")
    values = frame[features].to_numpy(np.float32)
    groups = frame.groupby("bag_id", sort=False).indices
    ids = list(groups)
    first_label = frame.groupby("bag_id", sort=False)["label"].first()
    return BagTable.from_arrays(
        [values[groups[i]] for i in ids],
        [first_label[i].item() for i in ids],
        ids=ids,
        source=str(path),
    )


@dataclass(frozen=True)
class StoreBags:
    """Bags streamed from slide stores' ``features/<model_id>`` parts.

    Only paths, ids, labels and sizes are held; :meth:`features` reads a bag (or
    the sampled rows of it) from disk when it is used.
    """

    stores: tuple[str, ...]
    model_id: str
    labels: tuple[Any, ...]
    ids: tuple[str, ...]
    patients: tuple[str, ...]
    sizes: tuple[int, ...]
    feature_dim: int

    def __post_init__(self) -> None:
        _check_lengths(self.ids, self.patients, self.labels)

    @property
    def dim(self) -> int:
        return self.feature_dim

    def __len__(self) -> int:
        return len(self.stores)

    def size(self, i: int) -> int:
        return self.sizes[i]

    def features(self, i: int, rows: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.stored_features(i, rows), dtype=np.float32)

    def stored_features(self, i: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Bag ``i`` (all rows, or sorted ``rows``) in the dtype it is stored in (float16 or 32)."""
        array = _feature_array(self.stores[i], self.model_id, _stamp(self.stores[i], self.model_id))
        return array[:] if rows is None else array.oindex[rows]

    def subset(self, indices: Sequence[int]) -> StoreBags:
        pick = list(indices)
        return StoreBags(
            stores=tuple(self.stores[i] for i in pick),
            model_id=self.model_id,
            labels=tuple(self.labels[i] for i in pick),
            ids=tuple(self.ids[i] for i in pick),
            patients=tuple(self.patients[i] for i in pick),
            sizes=tuple(self.sizes[i] for i in pick),
            feature_dim=self.feature_dim,
        )


def _array_path(store: str, model_id: str) -> Path:
    return Path(store) / FEATURES / model_id / "features"


def _stamp(store: str, model_id: str) -> tuple[int, int]:
    """Which version of the array is on disk: a rewritten part has a new metadata file."""
    meta = (_array_path(store, model_id) / "zarr.json").stat()
    return meta.st_ino, meta.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _feature_array(store: str, model_id: str, stamp: tuple[int, int]) -> zarr.Array:
    """The opened ``features`` array of a store (metadata only, cached per process).

    Opening costs several metadata reads; an epoch reads every bag, so the
    handles are kept, keyed by ``stamp`` so that a part written again (another
    dtype or size) is opened again. Completeness was checked when the bags were listed.
    """
    use_fast_codecs()
    return zarr.open_array(str(_array_path(store, model_id)), mode="r")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def bags_from_cohort(
    cohort: Cohort,
    *,
    project: str | os.PathLike[str],
    features: str,
    label: str | None = None,
    event: str | None = None,
) -> StoreBags:
    """The cohort's slides as bags of ``features/<features>`` from ``<project>/stores``.

    Parameters
    ----------
    cohort
        Slides with ``patient_id`` and label columns.
    project
        Project folder holding ``stores/<slide_id>.zarr``.
    features
        Feature part name (the embedder id).
    label
        Label column; ``None`` for unlabelled prediction. Slides with an empty label
        are left out.
    event
        Event column (1 event, 0 censored) for survival; the label is then the time.

    Raises
    ------
    MILError
        If a label column is missing, or listing every slide whose store or
        feature part is missing.
    """
    for column in (label, event):
        if column is not None and column not in cohort.label_columns:
            raise MILError(
                f"the cohort has no column {column!r}; it has {list(cohort.label_columns)}",
                hint="pass label=/event= naming a manifest column",
            )
    layout = ProjectLayout(project)
    stores, labels, ids, patients, sizes, dims, problems = [], [], [], [], [], set(), []
    for record in cohort:
        value = record.labels.get(label) if label is not None else None
        if event is not None:
            value = (value, record.labels.get(event))
            if any(_missing(v) for v in value):
                continue
        elif label is not None and _missing(value):
            continue
        store = layout.store(record.slide_id)
        try:
            info = feature_info(store, features)
        except StoreError as exc:
            problems.append(f"{record.slide_id}: {exc.message}")
            continue
        stores.append(str(store))
        labels.append(value)
        ids.append(record.slide_id)
        patients.append(record.patient_id)
        sizes.append(int(info["n"]))
        dims.add(int(info["dim"]))
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise MILError(
            f"{len(problems)} slide(s) have no features/{features}: {shown}",
            hint=f"embed the cohort with {features!r} first, or drop those slides",
        )
    if not stores:
        raise MILError(f"no labelled slide with features/{features} in {layout.stores_dir}")
    if len(dims) > 1:
        raise MILError(f"features/{features} has several dimensions across slides: {sorted(dims)}")
    return StoreBags(
        stores=tuple(stores),
        model_id=features,
        labels=tuple(labels),
        ids=tuple(ids),
        patients=tuple(patients),
        sizes=tuple(sizes),
        feature_dim=dims.pop(),
    )


def bag_tensor(source: BagSource, i: int, rows: np.ndarray | None = None) -> torch.Tensor:
    """Bag ``i`` of ``source`` (or its sorted ``rows``) as a float32 tensor.

    Bags of slide stores are read in their stored dtype and converted by torch,
    about five times faster than NumPy's float16 to float32 conversion (a
    quarter of the cost of reading a bag); in-memory bags are not copied.
    """
    if isinstance(source, StoreBags):
        return torch.from_numpy(source.stored_features(i, rows)).float()
    return torch.from_numpy(np.ascontiguousarray(source.features(i, rows)))


def sample_rows(
    n: int, *, max_instances: int | None, dropout: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Sorted rows to train on from a bag of ``n``: instance dropout, then a size cap.

    Returns ``None`` when every row is kept.
    """
    keep = n
    if dropout > 0:
        keep = max(1, round(n * (1 - dropout)))
    if max_instances is not None:
        keep = min(keep, max_instances)
    if keep >= n:
        return None
    return np.sort(rng.choice(n, size=keep, replace=False))
