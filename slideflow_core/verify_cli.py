"""``sfc verify PROJECT_OR_STORE [--deep] [--repair]``: find damaged parts, and redo them.

Prints one line per damaged part (store parts and export files) and exits 1 when
anything is damaged. ``--deep`` also finds changed bytes. ``--repair`` redoes
exactly the damaged parts with the stages that wrote them (configs rebuilt from
what each part recorded), verifies again and exits 0 only when everything
verifies; a part whose config cannot be rebuilt is listed with the reason and
the command that redoes it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from slideflow_core.cli import add_command
from slideflow_core.stages.protocol import EXECUTORS

if TYPE_CHECKING:
    from slideflow_core.repair import RepairResult
    from slideflow_core.verify import VerifyReport


def register_verify(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc verify``."""
    parser = add_command(
        subparsers,
        "verify",
        help="check stores against the files their parts recorded; --repair redoes damaged parts",
        description="Check every part of every store of a project (or one store, or an s3:// "
        "run directory) against the files, sizes and checksums it recorded when it was written. "
        "Prints one line per damaged part; exits 1 when anything is damaged. --repair redoes "
        "exactly those parts with the stages that wrote them, then verifies again.",
    )
    parser.add_argument(
        "target", metavar="PROJECT_OR_STORE", help="project folder, one store, or an s3:// URL"
    )
    parser.add_argument(
        "--deep", action="store_true", help="also recompute checksums (reads every byte)"
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="redo exactly the damaged parts with the stages that wrote them, then verify again",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="where --repair runs the stages: Ray tasks, Ray actors, or local (this process)",
    )
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Verify and print every problem; with ``--repair``, redo them. 1 while anything is damaged."""
    from slideflow_core.repair import repair_project, verify_project  # not on every sfc start

    if args.repair:
        result = repair_project(args.target, deep=args.deep, executor=args.executor)
        _print_found(args, list(result.before))
        if all(r.ok for r in result.before):
            return 0
        _print_repair(result)
        return 0 if result.ok else 1
    reports = verify_project(args.target, deep=args.deep)
    _print_found(args, reports)
    if all(r.ok for r in reports):
        return 0
    deep = " --deep" if args.deep else ""
    print(f"to redo exactly these parts: sfc verify {args.target}{deep} --repair")
    return 1


def _print_found(args: argparse.Namespace, reports: list[VerifyReport]) -> None:
    """One line per damaged part, then what was checked."""
    for report in reports:
        for line in report.lines():
            print(line)
    stores = [r for r in reports if r.record is None]
    n_parts = sum(len(r.parts) for r in reports)
    n_broken = sum(len(r.broken) + (r.error is not None) for r in reports)
    unverified = sum(p.status == "unverified" for r in reports for p in r.parts)
    checked = "presence, sizes and checksums" if args.deep else "presence and sizes"
    exports = len(reports) - len(stores)
    also = f" and {exports} exports" if exports else ""
    note = f"; {unverified} record no file list, not checkable" if unverified else ""
    print(
        f"checked {len(stores)} stores{also}, {n_parts} parts ({checked}): {n_broken} damaged{note}"
    )


def _print_repair(result: RepairResult) -> None:
    """What each stage run redid, what is left to do by hand, and the check afterwards."""
    for redo, report in zip(result.plan.runs, result.reports, strict=True):
        counts: dict[str, int] = {}
        for outcome in report.results:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"redid {', '.join(redo.parts)} with the {redo.stage} stage: {summary}")
        for outcome in report.results:
            if outcome.status == "failed":
                print(f"  {outcome.slide_id}: {outcome.error}")
    if result.plan.by_hand:
        print("these parts cannot be redone here; redo them by hand:")
        commands: dict[str, set[str]] = {}
        for item in result.plan.by_hand:
            print(f"  {item.slide_id}: {item.part}: {item.reason}")
            commands.setdefault(item.command, set()).add(item.slide_id)
        for command, slides in sorted(commands.items()):
            count = f"{len(slides)} slide{'s' if len(slides) != 1 else ''}"
            print(f"  {command}  (same arguments as before; {count}: {_some(slides)})")
    damaged = [r for r in result.after if not r.ok]
    for report in damaged:
        for line in report.lines():
            print(f"still damaged: {line}")
    n_stores = sum(r.record is None for r in result.after)
    state = "everything verifies" if not damaged else f"{len(damaged)} still damaged"
    print(f"after the repair: {n_stores} stores checked, {state}")


def _some(slides: set[str], limit: int = 5) -> str:
    names = sorted(slides)
    return ", ".join(names[:limit]) + (
        f", … {len(names) - limit} more" if len(names) > limit else ""
    )


__all__ = ["register_verify", "run_verify"]
