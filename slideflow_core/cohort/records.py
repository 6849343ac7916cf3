"""The rows of a cohort and the problems found in them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slideflow_core.cohort.ids import printable
from slideflow_core.errors import ManifestError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI with a scheme (``s3://``, ``https://``...)."""
    return bool(_URI.match(path))


@dataclass(frozen=True)
class SlideRecord:
    """One slide of a cohort, as the manifest describes it.

    Attributes
    ----------
    slide_id
        Unique name of the slide; outputs are named after it.
    path
        Absolute local path, or a URI (``s3://...``) kept as written.
    patient_id
        Patient the slide belongs to (the slide id when the manifest has none);
        splits group slides by it.
    mpp
        Level-0 µm per pixel overriding the file's calibration, or ``None``.
    labels
        Every other manifest column: name -> value (``None`` when empty).
        Treat it as read-only.
    line
        Where the row is in the manifest: the 1-based line of a CSV/TSV file
        (the header is line 1), the 1-based row of a Parquet file or
        DataFrame, ``None`` for slides found by scanning a folder.
    """

    slide_id: str
    path: str
    patient_id: str
    mpp: float | None = None
    # A dict keeps records picklable for workers; it is left out of the hash.
    labels: Mapping[str, Any] = field(default_factory=dict, hash=False)
    line: int | None = None

    @property
    def is_remote(self) -> bool:
        """Whether the slide is read through a URI rather than a local file."""
        return is_uri(self.path)

    def where(self) -> str:
        """Short location for messages: ``line 7`` or ``slide 'abc'``."""
        return f"line {self.line}" if self.line is not None else f"slide {self.slide_id!r}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cohort, with where it is and how to fix it.

    Attributes
    ----------
    line
        Manifest line (see :attr:`SlideRecord.line`), or ``None`` when the
        problem is not about one row.
    slide_id
        Slide concerned, if any.
    column
        Manifest column concerned, if any.
    message
        What is wrong.
    hint
        How to fix it, if known.
    """

    line: int | None
    slide_id: str | None
    column: str | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        """One line: where, what, and the fix; ids shown escaped (``'\\x1b[31mred'``)."""
        # The most precise location leads; the others follow in parentheses.
        places = [
            f"line {self.line}" if self.line is not None else None,
            f"slide {self.slide_id!r}" if self.slide_id is not None else None,
            f"column {self.column!r}" if self.column is not None else None,
        ]
        known = [p for p in places if p is not None] or ["cohort"]
        head = known[0] + (f" ({', '.join(known[1:])})" if len(known) > 1 else "")
        # Messages quote paths and reader errors that may hold a hostile id.
        text = f"{head}: {printable(self.message)}"
        return f"{text} — {printable(self.hint)}" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "line": self.line,
            "slide_id": self.slide_id,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every problem found in a cohort, in manifest order.

    Attributes
    ----------
    problems
        All problems, row problems sorted by line.
    n_rows
        Number of slides (manifest rows) checked.
    source
        The manifest or folder the cohort came from, if any.
    checked_files
        Whether local files were checked for existence.
    deep
        Whether every slide was opened.
    """

    problems: tuple[Problem, ...]
    n_rows: int
    source: str | None = None
    checked_files: bool = True
    deep: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def n_bad_rows(self) -> int:
        """Number of distinct rows (or slides) with at least one problem."""
        keys = {(p.line, p.slide_id) for p in self.problems}
        return len(keys - {(None, None)})

    def raise_for_problems(self) -> None:
        """Raise :class:`ManifestError` listing every problem, if there is any."""
        if self.problems:
            raise ManifestError(
                self._headline(),
                [str(p) for p in self.problems],
                hint="fix every row listed, then validate again",
            )

    def _headline(self) -> str:
        where = f"{printable(self.source)}: " if self.source else ""
        if self.ok:
            return f"{where}{self.n_rows} slide{'' if self.n_rows == 1 else 's'}, no problems"
        return f"{where}{len(self.problems)} problem(s) in {self.n_bad_rows} of {self.n_rows} rows"

    def __str__(self) -> str:
        checks = ["columns and values"]
        if self.checked_files:
            checks.append("files exist")
        if self.deep:
            checks.append("slides open with a calibration")
        lines = [self._headline(), f"checked: {', '.join(checks)}"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "source": self.source,
            "n_rows": self.n_rows,
            "ok": self.ok,
            "checked_files": self.checked_files,
            "deep": self.deep,
            "problems": [p.as_dict() for p in self.problems],
        }
