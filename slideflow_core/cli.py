"""The ``sfc`` command: a small dispatcher over subcommands found by entry point.

Each package contributes subcommands through the ``sfc.commands`` entry-point
group (see ``pyproject.toml``): an entry point is a function that receives the
``argparse`` subparsers object and adds one command whose ``func`` default
takes the parsed arguments and returns an exit code. The core therefore never
imports a stage, and a new stage plugs in without editing this file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from slideflow_core import __version__
from slideflow_core.errors import SlideflowError

ENTRY_POINT_GROUP = "sfc.commands"

#: Errors of the standard library that, raised by a command, mean the user named
#: something wrong (a missing file, a bad value): shown as one line with a hint.
USER_ERRORS: tuple[type[Exception], ...] = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
)

#: The fix for a missing manifest, shared by every command that reads one.
MANIFEST_HINT = "check the path, or write one: sfc cohort from-folder SLIDES/ --out manifest.csv"


class CommandError(SlideflowError):
    """A command was given something that is not there, or not of the kind it needs."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default and keeps descriptions' line breaks.

    An option without a value (``None``) or a flag that is off says nothing more.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_command(
    subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str = ""
) -> argparse.ArgumentParser:
    """Add one ``sfc`` subcommand with the shared help format (defaults shown)."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: works for one release, with a warning naming the new one.

    Use as ``parser.add_argument("--mpp", dest="target_mpp", action=DeprecatedAlias,
    new="--target-mpp", type=float, help=argparse.SUPPRESS)``.
    """

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: object):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(
            f"warning: {option_string} is deprecated and will be removed; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """Add the options every Ray-backed command shares: ``--address``, ``--num-cpus``,
    ``--no-progress``."""
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--num-cpus", type=int, help="cores for a local Ray instance")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_executor_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--executor auto|tasks|actors|local`` (read it back with :func:`executor_arg`)."""
    from slideflow_core.stages.protocol import EXECUTORS

    parser.add_argument(
        "--executor",
        choices=("auto", *EXECUTORS),
        default="auto",
        help="where the slides run: tasks (Ray tasks), actors (Ray actors), local (this "
        "process, no Ray); auto (default): the stage's own, except a small cohort with no "
        "Ray to join, which runs here rather than wait for Ray to start",
    )


def executor_arg(args: argparse.Namespace) -> str | None:
    """The ``--executor`` asked for, or ``None`` for ``auto`` (the runner chooses)."""
    return None if args.executor == "auto" else args.executor


def existing_file(path: str | os.PathLike[str], what: str, *, hint: str | None = None) -> Path:
    """``path`` if it is a file; else a :class:`CommandError` naming ``what`` it should be."""
    found = Path(path).expanduser()
    if found.is_file():
        return found
    if found.is_dir():
        raise CommandError(f"{what} {path} is a folder, not a file", hint=hint or _see_path())
    raise CommandError(f"{what} not found: {path}", hint=hint or _see_path())


def existing_folder(path: str | os.PathLike[str], what: str, *, hint: str | None = None) -> Path:
    """``path`` if it is a folder; else a :class:`CommandError` naming ``what`` it should be."""
    found = Path(path).expanduser()
    if found.is_dir():
        return found
    if found.exists():
        raise CommandError(f"{what} {path} is a file, not a folder", hint=hint or _see_path())
    raise CommandError(f"{what} not found: {path}", hint=hint or _see_path())


def output_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if a file can be written there: its folder exists and it is not a folder."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise CommandError(f"{what} {path} is a folder", hint="give a file name")
    folder = out.parent
    if not folder.is_dir():
        raise CommandError(
            f"cannot write {what} {path}: folder {folder} does not exist",
            hint=f"create it first (mkdir -p {folder}) or write elsewhere",
        )
    return out


def _see_path() -> str:
    return f"check the path; relative paths start from {Path.cwd()}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``sfc`` parser with every installed subcommand, or only ``command``.

    Loading one command's entry point (not all) keeps a command's start-up to
    the libraries it uses itself.
    """
    parser = argparse.ArgumentParser(
        prog="sfc",
        description="slideflow-core: whole-slide pathology from slides to tiles, features, "
        "MIL models and overlays.",
    )
    parser.add_argument("--version", action="version", version=f"slideflow-core {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    if any(ep.name == command for ep in found):
        found = [ep for ep in found if ep.name == command]
    for ep in found:
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:  # its optional dependencies are not installed here
            _unavailable(subparsers, ep.name, f"{exc} (needed by {ep.value})")
            continue
        register(subparsers)
    return parser


def _unavailable(subparsers: argparse._SubParsersAction, name: str, reason: str) -> None:
    """A command whose package cannot load: it says why instead of breaking every command."""
    parser = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def explain(args: argparse.Namespace) -> int:
        raise SlideflowError(
            f"sfc {name} is not available: {reason}",
            hint="install the extras: pip install 'slideflow-core[tiling,embed,mil,cells,cluster]'",
        )

    parser.set_defaults(func=explain)


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _print_error(exc: Exception, command: str) -> None:
    """``error:`` with the message (and its details), then ``hint:`` with the fix."""
    fallback = f"see sfc {command} --help; -v shows where the error was raised"
    details: list[str] = []
    if isinstance(exc, SlideflowError):
        message, details, hint = exc.message, exc.details(), exc.hint
    elif isinstance(exc, OSError) and exc.filename is not None:
        message, hint = f"{exc.strerror or type(exc).__name__}: {exc.filename}", None
    else:
        message, hint = str(exc) or type(exc).__name__, None
    if hint is None and isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        hint = _see_path()
    print(f"error: {message}", file=sys.stderr)
    for line in details:
        print(f"  - {line}", file=sys.stderr)
    print(f"hint: {hint or fallback}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sfc``; returns the process exit code (0 ok, 1 failure, 2 usage error).

    A user's mistake (our errors, and missing files or bad values) prints one
    ``error:`` line and a ``hint:`` line, never a traceback (``-v`` adds it).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SlideflowError, *USER_ERRORS) as exc:
        if args.verbose:
            traceback.print_exc()
        _print_error(exc, args.command)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
