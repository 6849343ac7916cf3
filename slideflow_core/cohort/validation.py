"""Checking a cohort: every problem in every row, reported at once.

A bad row never stops the checks of the others. The cheap checks (ids, paths,
label types) always run; ``check_files`` stats local files and ``deep`` opens
every slide, in threads, to find unreadable files and missing calibrations.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from slideflow_core.cohort.ids import ID_HINT, unsafe_reason
from slideflow_core.cohort.records import Problem, SlideRecord, ValidationReport
from slideflow_core.cohort.values import value_kind
from slideflow_core.errors import SlideflowError
from slideflow_core.slides import open_slide

_EXAMPLES = 3  # locations listed per kind in a mixed-label-type problem


def validate_records(
    records: Sequence[SlideRecord],
    *,
    label_columns: Sequence[str] = (),
    load_problems: Iterable[Problem] = (),
    source: str | None = None,
    check_files: bool = True,
    deep: bool = False,
    workers: int = 8,
) -> ValidationReport:
    """Check records and return every problem found.

    Parameters
    ----------
    records
        The cohort's rows.
    label_columns
        Label columns whose values must share one type.
    load_problems
        Problems already found while reading the manifest (ragged rows, labels
        of slides with no file); they are reported with the rest.
    source
        Manifest or folder the records came from, for the report's headline.
    check_files
        Check that local files exist and are readable (URIs are not checked).
    deep
        Also open every slide whose file was found: report unreadable files and
        slides with no calibration in the file and no ``mpp`` in the manifest.
    workers
        Threads used to open slides when ``deep``.

    Returns
    -------
    ValidationReport
        All problems, sorted by manifest line.
    """
    problems = list(load_problems)
    if not records:
        problems.append(
            Problem(None, None, None, "no slides in the manifest", hint="add one row per slide")
        )
    problems += _id_problems(records)
    path_problems, openable = _path_problems(records, check_files)
    problems += path_problems
    problems += _label_problems(records, label_columns)
    if deep:
        problems += _deep_problems(openable, workers)
    order: dict[str, int] = {}
    for position, record in enumerate(records):
        order.setdefault(record.slide_id, position)

    def sort_key(problem: Problem) -> float:
        # Manifest cohorts sort by line; folder cohorts (no lines) by slide position.
        if problem.line is not None:
            return problem.line
        return order.get(problem.slide_id or "", math.inf)

    problems.sort(key=sort_key)
    return ValidationReport(tuple(problems), len(records), source, check_files, deep)


def _id_problems(records: Sequence[SlideRecord]) -> list[Problem]:
    problems = []
    first: dict[str, SlideRecord] = {}
    for record in records:
        slide_id = record.slide_id
        if not slide_id:
            problems.append(
                Problem(
                    record.line,
                    None,
                    "slide_id",
                    "slide_id is empty",
                    hint="give every slide a unique id (e.g. the file name without extension)",
                )
            )
            continue
        reason = unsafe_reason(slide_id)
        if reason is not None:
            problems.append(
                Problem(
                    record.line,
                    slide_id,
                    "slide_id",
                    f"unsafe slide_id {slide_id!r}: {reason}",
                    hint=ID_HINT,
                )
            )
        if slide_id in first:
            earlier = first[slide_id]
            where = f"line {earlier.line}" if earlier.line is not None else earlier.path
            problems.append(
                Problem(
                    record.line,
                    slide_id,
                    "slide_id",
                    f"duplicate slide_id {slide_id!r}, already used on {where}",
                    hint="slide ids must be unique; rename one of the slides",
                )
            )
        else:
            first[slide_id] = record
    return problems


def _path_problems(
    records: Sequence[SlideRecord], check_files: bool
) -> tuple[list[Problem], list[SlideRecord]]:
    """Path problems, and the records whose path is worth opening."""
    problems, openable = [], []
    for record in records:
        message, hint = None, None
        if not record.path:
            message, hint = "path is empty", "give the slide's file path or URI"
        elif check_files and not record.is_remote:
            message, hint = _file_problem(record.path)
        if message is not None:
            problems.append(Problem(record.line, record.slide_id or None, "path", message, hint))
        else:
            openable.append(record)
    return problems, openable


def _file_problem(path: str) -> tuple[str | None, str | None]:
    if not os.path.exists(path):
        hint = "fix the path; relative paths are resolved against the manifest's folder or root"
        if path != path.strip():
            hint = "the path starts or ends with whitespace; remove it"
        return f"file not found: {path}", hint
    if os.path.isdir(path):
        return f"path is a folder, not a slide file: {path}", "point at the slide file itself"
    if not os.access(path, os.R_OK):
        return f"file is not readable (permission denied): {path}", "fix the file's permissions"
    return None, None


def _label_problems(records: Sequence[SlideRecord], label_columns: Sequence[str]) -> list[Problem]:
    problems = []
    for column in label_columns:
        by_kind: dict[str, list[SlideRecord]] = defaultdict(list)
        for record in records:
            value = record.labels.get(column)
            if value is not None:
                by_kind[value_kind(value)].append(record)
        if len(by_kind) < 2:
            continue
        # Most common kind first: the rarer kinds are most likely the typos.
        kinds = [kind for kind, _ in Counter({k: len(v) for k, v in by_kind.items()}).most_common()]
        parts = [f"{kind} on {_examples(by_kind[kind])}" for kind in kinds]
        culprit = by_kind[kinds[-1]][0]
        problems.append(
            Problem(
                culprit.line,
                culprit.slide_id or None,
                column,
                f"label column {column!r} mixes {' and '.join(kinds)} values: {'; '.join(parts)}",
                hint="a label column holds one type: make every value a number, or every "
                "value text (e.g. 'grade_1' rather than 1)",
            )
        )
    return problems


def _examples(records: Sequence[SlideRecord]) -> str:
    shown = ", ".join(
        str(r.line) if r.line is not None else repr(r.slide_id) for r in records[:_EXAMPLES]
    )
    noun = "line" if records[0].line is not None else "slide"
    more = f" and {len(records) - _EXAMPLES} more" if len(records) > _EXAMPLES else ""
    return f"{noun}{'s' if len(records) > 1 else ''} {shown}{more}"


def _deep_problems(records: Sequence[SlideRecord], workers: int) -> list[Problem]:
    if not records:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(records)))) as pool:
        results = list(pool.map(_open_problem, records))
    return [p for p in results if p is not None]


def _open_problem(record: SlideRecord) -> Problem | None:
    slide_id = record.slide_id or None
    try:
        with open_slide(record.path, mpp=record.mpp, slide_id=slide_id) as slide:
            calibrated = slide.has_mpp
    except SlideflowError as exc:
        return Problem(record.line, slide_id, "path", f"unreadable: {exc.message}", exc.hint)
    except Exception as exc:  # any reader failure belongs to this row only
        return Problem(record.line, slide_id, "path", f"unreadable: {type(exc).__name__}: {exc}")
    if calibrated:
        return None
    return Problem(
        record.line,
        slide_id,
        "mpp",
        "no microns-per-pixel calibration in the file and no mpp given",
        hint="fill the manifest's mpp column for this slide "
        "(level-0 µm per pixel, e.g. 0.25 at 40×, 0.5 at 20×)",
    )
