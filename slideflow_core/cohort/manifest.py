"""Reading and writing cohort manifests: CSV, TSV, Parquet or a DataFrame.

A manifest has one row per slide: ``slide_id`` and ``path`` are required,
``patient_id`` and ``mpp`` optional, and every other column is a label.
Reading stops when the table itself is unusable (missing required columns,
duplicate or unnamed columns) and when an ``mpp`` value is invalid, since a
bad calibration must never read as "none given"; any other bad value in a row
becomes a :class:`Problem` that validation reports with everything else.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from slideflow_core.cohort.ids import printable
from slideflow_core.cohort.records import Problem, SlideRecord, is_uri
from slideflow_core.cohort.values import (
    MPP_HINT,
    as_text,
    native_value,
    parse_label_text,
    parse_mpp,
)
from slideflow_core.errors import ManifestError

REQUIRED_COLUMNS = ("slide_id", "path")
OPTIONAL_COLUMNS = ("patient_id", "mpp")
RESERVED_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

DELIMITERS = {".csv": ",", ".txt": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")

# Names people use for the required columns; only used to suggest a rename.
_ALIASES = {
    "slide_id": ("slide", "slide_name", "slidename", "slideid", "id", "image_id", "name"),
    "path": (
        "filename",
        "file_name",
        "file",
        "filepath",
        "file_path",
        "slide_path",
        "image_path",
        "location",
        "uri",
        "url",
    ),
}


@dataclass(frozen=True)
class LoadedManifest:
    """Records read from a manifest plus the row problems found while parsing."""

    records: tuple[SlideRecord, ...]
    label_columns: tuple[str, ...]
    problems: tuple[Problem, ...]
    source: str | None


def read_manifest(
    source: str | os.PathLike[str] | pd.DataFrame,
    *,
    root: str | os.PathLike[str] | None = None,
) -> LoadedManifest:
    """Read a manifest file or DataFrame into records.

    Parameters
    ----------
    source
        ``.csv``/``.txt`` (comma), ``.tsv``/``.tab`` (tab), ``.parquet``/``.pq``
        file, or a DataFrame.
    root
        Folder relative paths are resolved against; defaults to the manifest's
        folder (the working directory for a DataFrame).

    Raises
    ------
    FileNotFoundError
        If the manifest file does not exist.
    ManifestError
        If the table is unreadable or lacks ``slide_id``/``path``, has
        duplicate or unnamed columns, or has invalid ``mpp`` values (listing
        every one with its line).
    """
    if isinstance(source, pd.DataFrame):
        name = None
        columns, rows = _frame_rows(source)
        text_cells = False
        base = Path(root).expanduser() if root is not None else Path.cwd()
    elif is_uri(os.fspath(source)):
        raise ManifestError(
            f"{os.fspath(source)}: manifests are read from local files",
            [],
            hint="read it with pandas (pd.read_csv or pd.read_parquet) and pass the DataFrame",
        )
    else:
        path = Path(source).expanduser()
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            columns, rows = _frame_rows(_read_parquet(path))
            text_cells = False
        elif suffix in DELIMITERS:
            columns, rows = _read_delimited(path, DELIMITERS[suffix])
            text_cells = True
        else:
            raise ManifestError(
                f"{path}: unsupported manifest type {suffix or '(no suffix)'!r}",
                [],
                hint=f"use one of {', '.join([*DELIMITERS, *PARQUET_SUFFIXES])} "
                "(export spreadsheets as CSV)",
            )
        base = Path(root).expanduser() if root is not None else path.parent
    _check_columns(columns, name)
    records, problems = _build_records(columns, rows, text_cells, base.absolute(), name)
    labels = tuple(c for c in columns if c not in RESERVED_COLUMNS)
    return LoadedManifest(tuple(records), labels, tuple(problems), name)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise ManifestError(
            f"{path}: cannot read Parquet manifest ({type(exc).__name__}: {exc})",
            [],
            hint="check that the file is a complete Parquet file",
        ) from exc


def _read_delimited(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    """Header and ``(first physical line, cells)`` rows; blank rows are skipped."""
    header: list[str] | None = None
    rows: list[tuple[int, list[Any]]] = []
    next_line = 1
    # utf-8-sig drops the byte-order mark spreadsheet programs put first.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            for cells in reader:
                # A quoted value may span lines: a record starts after the last one ended.
                line, next_line = next_line, reader.line_num + 1
                if not any(cell.strip() for cell in cells):
                    continue
                if header is None:
                    header = cells
                else:
                    rows.append((line, cells))
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                [],
                hint="save the manifest as UTF-8 CSV",
            ) from exc
        except csv.Error as exc:
            raise ManifestError(
                f"{path}: malformed CSV near line {reader.line_num}: {exc}",
                [],
                hint="check the quoting on that line",
            ) from exc
    if header is None:
        raise ManifestError(f"{path}: the manifest is empty", [], hint="add a header row")
    columns = [c.strip() for c in header]
    # Spreadsheets often end the header with empty cells; they name no column.
    while columns and not columns[-1]:
        columns.pop()
    return columns, rows


def _frame_rows(frame: pd.DataFrame) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    if any(name in RESERVED_COLUMNS for name in frame.index.names):
        frame = frame.reset_index()  # e.g. a frame indexed by slide_id
    columns = [str(c).strip() for c in frame.columns]
    rows = [(i + 1, list(t)) for i, t in enumerate(frame.itertuples(index=False, name=None))]
    return columns, rows


def _check_columns(columns: Sequence[str], source: str | None) -> None:
    where = f"{source}: " if source else "manifest: "
    unnamed = [i + 1 for i, c in enumerate(columns) if not c]
    if unnamed:
        raise ManifestError(
            f"{where}column(s) {', '.join(map(str, unnamed))} have no name",
            [f"column {i} has an empty header" for i in unnamed],
            hint="name every column in the header row",
        )
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ManifestError(
            f"{where}duplicate column name(s): {', '.join(map(repr, duplicates))}",
            [f"column {c!r} appears {columns.count(c)} times" for c in duplicates],
            hint="give every column a distinct name",
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        found = ", ".join(map(repr, columns)) or "none"
        raise ManifestError(
            f"{where}missing required column(s) {', '.join(map(repr, missing))}; "
            f"columns found: {found}",
            [f"missing required column {c!r}" for c in missing],
            hint=_rename_hint(missing, columns),
        )


def _rename_hint(missing: Iterable[str], columns: Sequence[str]) -> str:
    normalized = {re.sub(r"[\s-]+", "_", c.lower()): c for c in columns}
    renames = []
    for required in missing:
        for candidate in (required, *_ALIASES[required]):
            if candidate in normalized:
                renames.append(f"rename column {normalized[candidate]!r} to {required!r}")
                break
    if renames:
        return "; ".join(renames) + " (column names are exact and case-sensitive)"
    return (
        "a manifest needs 'slide_id' (a unique name per slide) and 'path' (file path or URI); "
        "'patient_id' and 'mpp' are optional, other columns are labels"
    )


def _build_records(
    columns: Sequence[str],
    rows: Iterable[tuple[int, list[Any]]],
    text_cells: bool,
    base: Path,
    source: str | None,
) -> tuple[list[SlideRecord], list[Problem]]:
    index = {name: i for i, name in enumerate(columns)}
    label_columns = [c for c in columns if c not in RESERVED_COLUMNS]
    parse_label = parse_label_text if text_cells else native_value
    width = len(columns)
    records: list[SlideRecord] = []
    problems: list[Problem] = []
    bad_mpp: list[Problem] = []
    for line, raw in rows:
        cells = raw[:width] + [""] * (width - len(raw))
        slide_id = as_text(cells[index["slide_id"]])
        # Trailing empty cells are harmless (spreadsheets pad rows); anything else
        # means values shifted between columns.
        if len(raw) < width or any(str(c).strip() for c in raw[width:]):
            problems.append(
                Problem(
                    line,
                    slide_id or None,
                    None,
                    f"has {len(raw)} fields but the header has {width}",
                    hint="quote values that contain the delimiter, and give every row "
                    "one value per column",
                )
            )
        patient = as_text(cells[index["patient_id"]]).strip() if "patient_id" in index else ""
        mpp, error = parse_mpp(cells[index["mpp"]]) if "mpp" in index else (None, None)
        if error:
            bad_mpp.append(Problem(line, slide_id or None, "mpp", error))
        records.append(
            SlideRecord(
                slide_id=slide_id,
                path=resolve_path(as_text(cells[index["path"]]), base),
                patient_id=patient or slide_id,
                mpp=mpp,
                labels={c: parse_label(cells[index[c]]) for c in label_columns},
                line=line,
            )
        )
    raise_for_bad_mpp(bad_mpp, source)
    return records, problems


def raise_for_bad_mpp(problems: Sequence[Problem], source: str | None) -> None:
    """Raise :class:`ManifestError` listing every invalid ``mpp`` value, if there is any.

    Parameters
    ----------
    problems
        One problem per bad ``mpp`` cell (its line or slide, and the value).
    source
        Manifest or folder the values came from, named in the message.
    """
    if problems:
        where = f"{printable(source)}: " if source else "manifest: "
        raise ManifestError(
            f"{where}{len(problems)} invalid mpp value(s); a bad calibration is not "
            "read as missing",
            [str(p) for p in problems],
            hint=MPP_HINT,
        )


def resolve_path(raw: str, base: Path) -> str:
    """Absolute, normalized local path for ``raw``; URIs other than ``file://`` as given.

    Parameters
    ----------
    raw
        Path as written in the manifest (``~`` is expanded).
    base
        Folder a relative path is relative to.
    """
    if not raw:
        return ""
    if raw.startswith("file://"):
        raw = unquote(urlparse(raw).path)
    elif is_uri(raw):
        return raw
    path = Path(raw).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)
