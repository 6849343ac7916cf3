"""Checking slide stores against what their parts recorded when they committed.

Every part written through :mod:`slideflow_core.store` lists its files with
sizes and checksums in its marker. :func:`verify` compares a store (a local
folder or an ``s3://`` URL) with those lists (presence and sizes; checksums too
when ``deep``); :func:`verify_exports` does the same for a project's export
records. :func:`repair` unmarks the damaged parts of a store;
:func:`slideflow_core.repair.repair_project` then redoes them with their stages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slideflow_core.cohort.records import is_uri
from slideflow_core.manifest import FileProblems, check_manifest
from slideflow_core.store import (
    MANIFEST,
    STORE_KIND,
    StoreError,
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
    record
        For an export (``store`` is then its ``<slide_id>.export.json``): the
        record, else ``None``.
    """

    store: Path | str
    parts: tuple[PartCheck, ...]
    error: str | None = None
    deep: bool = False
    record: dict[str, Any] | None = None

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
    """Check every complete part of a store against its manifest.

    Parameters
    ----------
    store
        A slide store: a local folder, or a URL (``s3://``, read through fsspec).
    deep
        Recompute every file's checksum (reads every byte); else presence and
        sizes only (one ``stat`` per file).

    Returns
    -------
    VerifyReport
        Per part: ``ok``, ``unverified`` (written before manifests) or
        ``corrupt`` with the files that are missing, resized or changed.
    """
    raw = os.fspath(store)
    path: Path | str = raw.rstrip("/") if is_uri(raw) else Path(raw)
    try:
        attrs = read_store_attrs(path)
    except StoreError as exc:
        return VerifyReport(path, (), error=exc.message, deep=deep)
    checks = tuple(
        _check(path, part, info.get(MANIFEST), deep)
        for part, info in sorted(attrs.get("parts", {}).items())
        if info.get("complete")
    )
    return VerifyReport(path, checks, deep=deep)


def _check(root: Path | str, part: str, manifest: Any, deep: bool) -> PartCheck:
    if not manifest:
        return PartCheck(part, "unverified")
    problems = check_manifest(root, manifest, deep=deep)
    return PartCheck(part, "ok" if problems.ok else "corrupt", problems)


def verify_exports(project: str | os.PathLike[str], deep: bool = False) -> list[VerifyReport]:
    """Check the files of every export record (``exports/<slide_id>.export.json``) of a project.

    An export record lists its files with sizes and checksums, like a store part
    (part name ``exports``); a record that does not read is damaged too (its
    report's ``record`` is then empty). ``project`` may be a URL (``s3://``).
    """
    reports = []
    for location, folder, read in _export_records(project):
        try:
            record = json.loads(read())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            error = f"{location} is damaged ({exc}); export the slide again (sfc export)"
            reports.append(VerifyReport(location, (), error=error, deep=deep, record={}))
            continue
        check = _check(folder, "exports", record.get(MANIFEST), deep)
        reports.append(VerifyReport(location, (check,), deep=deep, record=record))
    return reports


def _export_records(project: str | os.PathLike[str]) -> list[tuple[Any, Any, Any]]:
    """``(record location, its folder, a reader of its text)`` of every export record."""
    raw = os.fspath(project).rstrip("/")
    if not is_uri(raw):
        folder = Path(raw) / "exports"
        paths = sorted(folder.glob("*.export.json"))
        return [(path, folder, path.read_text) for path in paths]
    import fsspec

    fs, base = fsspec.core.url_to_fs(raw)
    scheme = raw.split("://", 1)[0]
    found = sorted(fs.glob(f"{base}/exports/*.export.json"))
    folder = f"{raw}/exports"
    return [
        (f"{scheme}://{key}", folder, lambda key=key: fs.cat_file(key).decode()) for key in found
    ]


def repair(report: VerifyReport) -> tuple[str, ...]:
    """Unmark the damaged parts of a verified store so their stage redoes them.

    A store whose root metadata is damaged has no markers to change: tiling
    it again replaces it. Returns the parts unmarked.
    """
    if is_uri(os.fspath(report.store)):
        raise StoreError(
            f"{report.store} is at a URL: its parts are redone where its stores are built",
            hint="rerun the pipeline (sfc run): stages redo parts that fail the cheap check",
        )
    for check in report.broken:
        unmark_part(report.store, check.part)
    return tuple(check.part for check in report.broken)


def find_stores(path: str | os.PathLike[str]) -> list[Path | str]:
    """The stores to check: every ``stores/*.zarr`` of a project, or ``path`` itself.

    ``path`` may be a URL (``s3://bucket/project`` or one store there): stores
    are then returned as URLs.

    Raises
    ------
    StoreError
        If ``path`` is neither a project with a ``stores`` folder nor a store.
    """
    if is_uri(os.fspath(path)):
        return _find_remote_stores(os.fspath(path).rstrip("/"))
    path = Path(path)
    if (path / "stores").is_dir():
        return sorted(p for p in (path / "stores").glob("*.zarr") if p.is_dir())
    if path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").exists()):
        return [path]
    raise StoreError(
        f"{path} is neither a project (no stores folder) nor a {STORE_KIND}",
        hint="give a project folder (with stores/) or one <slide_id>.zarr store",
    )


def _find_remote_stores(url: str) -> list[Path | str]:
    import fsspec

    fs, base = fsspec.core.url_to_fs(url)
    scheme = url.split("://", 1)[0]
    if fs.exists(f"{base}/stores"):
        found = [p for p in fs.ls(f"{base}/stores", detail=False) if p.endswith(".zarr")]
        return sorted(f"{scheme}://{p}" for p in found)
    if fs.exists(f"{base}/zarr.json"):
        return [url]
    raise StoreError(
        f"{url} is neither a project (no stores folder) nor a {STORE_KIND}",
        hint="give the run directory (with stores/) or one <slide_id>.zarr store",
    )


__all__ = [
    "PART_STATUSES",
    "PartCheck",
    "VerifyReport",
    "find_stores",
    "repair",
    "verify",
    "verify_exports",
]
