"""Checking slide stores against what their parts recorded when they committed.

Every part written through :mod:`slideflow_core.store` lists its files with
sizes and checksums in its marker. :func:`verify` compares a store with those
lists (presence and sizes; checksums too when ``deep``), and :func:`repair`
unmarks the damaged parts so the stage that wrote them redoes exactly those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from slideflow_core.manifest import FileProblems
from slideflow_core.store import (
    STORE_KIND,
    StoreError,
    check_part,
    read_store_attrs,
    unmark_part,
)

#: What a checked part is: as written, written before manifests existed, or damaged.
PART_STATUSES = ("ok", "unverified", "corrupt")


@dataclass(frozen=True)
class PartCheck:
    """One part of one store, checked.

    Attributes
    ----------
    part
        The part (``tiling``, ``features/uni``, …).
    status
        ``"ok"``, ``"unverified"`` (no manifest recorded) or ``"corrupt"``.
    problems
        The damaged files (``None`` when unverified).
    """

    part: str
    status: str
    problems: FileProblems | None = None

    def describe(self) -> str:
        """One line: what is wrong, naming the first damaged file of each kind."""
        if self.problems is None or self.problems.ok:
            return self.status
        pieces = []
        for label, paths in (
            ("missing", self.problems.missing),
            ("wrong size", self.problems.wrong_size),
            ("checksum mismatch", self.problems.wrong_checksum),
        ):
            if paths:
                more = f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""
                pieces.append(f"{label} {paths[0]}{more}")
        return "; ".join(pieces)


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` found in one store.

    Attributes
    ----------
    store
        The store.
    parts
        Every part marked complete, checked.
    error
        Why the store itself could not be read (its root metadata is damaged,
        or it is not a slide store), else ``None``.
    deep
        Whether checksums were recomputed.
    """

    store: Path
    parts: tuple[PartCheck, ...]
    error: str | None = None
    deep: bool = False

    @property
    def ok(self) -> bool:
        """The store is readable and no part is damaged."""
        return self.error is None and not self.broken

    @property
    def broken(self) -> tuple[PartCheck, ...]:
        """The damaged parts."""
        return tuple(p for p in self.parts if p.status == "corrupt")

    def lines(self) -> list[str]:
        """One line per problem: the store, the part and what is wrong with it."""
        if self.error is not None:
            return [self.error]  # names the store already
        return [f"{self.store}: part {p.part}: {p.describe()}" for p in self.broken]


def verify(store: str | os.PathLike[str], deep: bool = False) -> VerifyReport:
    """Check every complete part of a local store against its manifest.

    Parameters
    ----------
    store
        A slide store.
    deep
        Recompute every file's checksum (reads every byte); else presence and
        sizes only (one ``stat`` per file).

    Returns
    -------
    VerifyReport
        Per part: ``ok``, ``unverified`` (written before manifests) or
        ``corrupt`` with the files that are missing, resized or changed.
    """
    path = Path(store)
    try:
        attrs = read_store_attrs(path)
    except StoreError as exc:
        return VerifyReport(path, (), error=exc.message, deep=deep)
    checks = []
    for part, info in sorted(attrs.get("parts", {}).items()):
        if not info.get("complete"):
            continue
        problems = check_part(path, part, info, deep=deep)
        if problems is None:
            checks.append(PartCheck(part, "unverified"))
        else:
            checks.append(PartCheck(part, "ok" if problems.ok else "corrupt", problems))
    return VerifyReport(path, tuple(checks), deep=deep)


def repair(report: VerifyReport) -> tuple[str, ...]:
    """Unmark the damaged parts of a verified store so their stage redoes them.

    A store whose root metadata is damaged has no markers to change: tiling
    it again replaces it. Returns the parts unmarked.
    """
    for check in report.broken:
        unmark_part(report.store, check.part)
    return tuple(check.part for check in report.broken)


def find_stores(path: str | os.PathLike[str]) -> list[Path]:
    """The stores to check: every ``stores/*.zarr`` of a project, or ``path`` itself.

    Raises
    ------
    StoreError
        If ``path`` is neither a project with a ``stores`` folder nor a store.
    """
    path = Path(path)
    if (path / "stores").is_dir():
        return sorted(p for p in (path / "stores").glob("*.zarr") if p.is_dir())
    if path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").exists()):
        return [path]
    raise StoreError(
        f"{path} is neither a project (no stores folder) nor a {STORE_KIND}",
        hint="give a project folder (with stores/) or one <slide_id>.zarr store",
    )


__all__ = [
    "PART_STATUSES",
    "PartCheck",
    "VerifyReport",
    "find_stores",
    "repair",
    "verify",
]
