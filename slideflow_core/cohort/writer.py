"""Writing a cohort back out: a typed DataFrame, CSV/TSV or Parquet."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from slideflow_core.cohort.manifest import DELIMITERS, PARQUET_SUFFIXES, RESERVED_COLUMNS
from slideflow_core.cohort.records import SlideRecord
from slideflow_core.cohort.values import value_kind


def records_to_frame(records: Sequence[SlideRecord], label_columns: Sequence[str]) -> pd.DataFrame:
    """A DataFrame with one row per record and one typed column per label."""
    data: dict[str, pd.Series] = {
        "slide_id": pd.Series([r.slide_id for r in records], dtype=object),
        "path": pd.Series([r.path for r in records], dtype=object),
        "patient_id": pd.Series([r.patient_id for r in records], dtype=object),
        "mpp": pd.Series([r.mpp for r in records], dtype="float64"),
    }
    for column in label_columns:
        data[column] = _label_series([r.labels.get(column) for r in records])
    return pd.DataFrame(data, columns=list(data))


def _label_series(values: list[Any]) -> pd.Series:
    present = [v for v in values if v is not None]
    kinds = {value_kind(v) for v in present}
    if kinds == {"boolean"}:
        return pd.Series(values, dtype="boolean")
    if kinds == {"number"}:
        # Nullable integers keep 1 as 1 (not 1.0) when some slides are unlabelled.
        all_int = all(isinstance(v, int) for v in present)
        return pd.Series(values, dtype="Int64" if all_int else "float64")
    return pd.Series(values, dtype=object)


def write_records(
    records: Sequence[SlideRecord], label_columns: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Write records as a manifest whose type follows the suffix of ``path``.

    The file is written next to its destination and renamed into place, so a
    crash never leaves a half-written manifest.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DELIMITERS and suffix not in PARQUET_SUFFIXES:
        raise ValueError(
            f"{path}: cannot tell the manifest type from {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join([*DELIMITERS, *PARQUET_SUFFIXES])}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    if suffix in PARQUET_SUFFIXES:
        frame = records_to_frame(records, label_columns)
        for column in label_columns:
            if frame[column].dtype == object:
                # Parquet needs one type per column; text is the type every value has.
                frame[column] = [None if v is None else str(v) for v in frame[column]]
        frame.to_parquet(partial, index=False)
    else:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=DELIMITERS[suffix])
            writer.writerow([*RESERVED_COLUMNS, *label_columns])
            for record in records:
                values = [record.slide_id, record.path, record.patient_id, record.mpp]
                values += [record.labels.get(c) for c in label_columns]
                writer.writerow([_format_cell(v) for v in values])
    os.replace(partial, path)
    return path


def _format_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)
