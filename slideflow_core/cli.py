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
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from slideflow_core import __version__
from slideflow_core.errors import SlideflowError

ENTRY_POINT_GROUP = "sfc.commands"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default and keeps descriptions' line breaks."""


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


def build_parser() -> argparse.ArgumentParser:
    """The full ``sfc`` parser with every installed subcommand."""
    parser = argparse.ArgumentParser(
        prog="sfc",
        description="slideflow-core: whole-slide pathology from slides to tiles, features, "
        "MIL models and overlays.",
    )
    parser.add_argument("--version", action="version", version=f"slideflow-core {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError as exc:  # its optional dependencies are not installed here
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sfc``; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
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
    except SlideflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for line in exc.details():
            print(f"  - {line}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
