"""``sfc verify PROJECT_OR_STORE [--deep] [--repair]``: find damaged store parts.

Prints one line per damaged part and exits 1 when anything is damaged. A rerun
of a stage already redoes parts whose files are missing or resized; ``--deep``
also finds changed bytes, and ``--repair`` unmarks every damaged part so the
next run of the stage that wrote it redoes exactly those.
"""

from __future__ import annotations

import argparse

from slideflow_core.cli import add_command
from slideflow_core.verify import VerifyReport, find_stores, repair, verify

#: The command that writes each kind of part, by the first name of the part's path.
REDO_COMMANDS = {
    "tiling": "sfc tile",
    "features": "sfc embed",
    "cells": "sfc segment",
    "attention": "sfc mil predict",
}


def register_verify(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc verify``."""
    parser = add_command(
        subparsers,
        "verify",
        help="check stores against the files their parts recorded; --repair unmarks damaged parts",
        description="Check every part of every store of a project (or one store) against the "
        "files, sizes and checksums it recorded when it was written. Prints one line per "
        "damaged part; exits 1 when anything is damaged.",
    )
    parser.add_argument("target", metavar="PROJECT_OR_STORE", help="project folder or one store")
    parser.add_argument(
        "--deep", action="store_true", help="also recompute checksums (reads every byte)"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="unmark damaged parts so the command that wrote them redoes exactly those",
    )
    parser.set_defaults(func=run_verify)


def redo_command(part: str) -> str:
    """The ``sfc`` command that writes ``part``."""
    return REDO_COMMANDS.get(part.split("/")[0], f"the command that wrote {part}")


def run_verify(args: argparse.Namespace) -> int:
    """Verify, print every problem, optionally repair; 1 when anything is damaged."""
    reports = [verify(store, deep=args.deep) for store in find_stores(args.target)]
    damaged = [report for report in reports if not report.ok]
    for report in damaged:
        for line in report.lines():
            print(line)
    n_parts = sum(len(report.parts) for report in reports)
    n_broken = sum(len(report.broken) + (report.error is not None) for report in reports)
    unverified = sum(p.status == "unverified" for report in reports for p in report.parts)
    checked = "presence, sizes and checksums" if args.deep else "presence and sizes"
    note = f"; {unverified} written before manifests, not checkable" if unverified else ""
    print(f"checked {len(reports)} stores, {n_parts} parts ({checked}): {n_broken} damaged{note}")
    if not damaged:
        return 0
    redo = _redo(damaged, unmark=args.repair)
    if args.repair:
        print("unmarked the damaged parts; these commands redo exactly those:")
    else:
        deep = " --deep" if args.deep else ""
        print(f"to redo exactly these parts: sfc verify {args.target}{deep} --repair, then")
    for command, slides in sorted(redo.items()):
        count = f"{len(slides)} slide{'s' if len(slides) != 1 else ''}"
        print(f"  {command}  (same arguments as before; {count}: {_some(slides)})")
    return 1


def _redo(reports: list[VerifyReport], *, unmark: bool) -> dict[str, set[str]]:
    """Damaged slides by the command that redoes them, unmarking their parts if asked."""
    redo: dict[str, set[str]] = {}
    for report in reports:
        slide = report.store.name.removesuffix(".zarr")
        if report.error is not None:  # no markers left to change: tiling replaces the store
            redo.setdefault(redo_command("tiling"), set()).add(slide)
        parts = repair(report) if unmark else tuple(p.part for p in report.broken)
        for part in parts:
            redo.setdefault(redo_command(part), set()).add(slide)
    return redo


def _some(slides: set[str], limit: int = 5) -> str:
    names = sorted(slides)
    return ", ".join(names[:limit]) + (
        f", … {len(names) - limit} more" if len(names) > limit else ""
    )
