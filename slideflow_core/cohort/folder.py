"""Building a cohort from the slide files in a folder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slideflow_core.cohort.ids import SLIDE_EXTENSIONS, slide_id_from_filename
from slideflow_core.cohort.manifest import LoadedManifest, raise_for_bad_mpp
from slideflow_core.cohort.records import Problem, SlideRecord
from slideflow_core.cohort.values import as_text, native_value, parse_mpp
from slideflow_core.errors import ManifestError

# Keys of a slide's ``labels`` entry that fill record fields instead of labels.
_RECORD_KEYS = ("patient_id", "mpp")


def scan_folder(
    folder: str | os.PathLike[str],
    *,
    extensions: Sequence[str] = SLIDE_EXTENSIONS,
    recursive: bool = False,
    labels: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedManifest:
    """One record per slide file in ``folder``, sorted by path.

    Parameters
    ----------
    folder
        Folder to scan.
    extensions
        File extensions that mark slides (case-insensitive, dot optional).
    recursive
        Also scan subfolders. Hidden files and folders are always skipped.
    labels
        ``slide_id -> {column: value}``. ``patient_id`` and ``mpp`` keys fill
        those fields; other keys become label columns. Ids with no file are
        reported as problems.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ManifestError
        If it holds no slide file, or ``labels`` give invalid ``mpp`` values.
    """
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"slide folder not found: {root}")
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(
        path
        for path in candidates
        if path.name.lower().endswith(suffixes)
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    )
    if not files:
        where = "" if recursive else " (subfolders not searched: pass recursive=True)"
        raise ManifestError(
            f"{root}: no slide files found{where}",
            [],
            hint=f"looked for {', '.join(suffixes)}; pass extensions=... for other types",
        )
    labels = labels or {}
    found = [slide_id_from_filename(path.name) for path in files]
    columns = _label_columns(labels, found)
    records, problems, bad_mpp = [], [], []
    for slide_id, path in zip(found, files, strict=True):
        values = labels.get(slide_id, {})
        mpp, error = parse_mpp(values.get("mpp"))
        if error:
            bad_mpp.append(Problem(None, slide_id, "mpp", error))
        records.append(
            SlideRecord(
                slide_id=slide_id,
                path=str(path),
                patient_id=as_text(values.get("patient_id")).strip() or slide_id,
                mpp=mpp,
                labels={c: native_value(values.get(c)) for c in columns},
            )
        )
    raise_for_bad_mpp(bad_mpp, str(root))
    for slide_id in sorted(set(labels) - set(found)):
        problems.append(
            Problem(
                None,
                slide_id,
                None,
                f"labels given for a slide with no file in {root}",
                hint="check the slide id, or add the missing file",
            )
        )
    return LoadedManifest(tuple(records), columns, tuple(problems), str(root))


def _label_columns(
    labels: Mapping[str, Mapping[str, Any]], found: Sequence[str]
) -> tuple[str, ...]:
    """Label keys of the slides found, in first-seen order."""
    columns: dict[str, None] = {}
    for slide_id in found:
        for key in labels.get(slide_id, {}):
            if key in ("slide_id", "path"):
                raise ValueError(
                    f"labels for {slide_id!r} set {key!r}, which comes from the file itself"
                )
            if key not in _RECORD_KEYS:
                columns.setdefault(key, None)
    return tuple(columns)
