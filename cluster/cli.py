"""``sfc run``, ``sfc submit``, ``sfc status``, ``sfc logs``, ``sfc cancel`` (entry points).

The same commands run as ``python -m cluster ...``, which is how a submitted
job starts on the cluster (no console script needed there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from slideflow_core.cli import add_command, add_ray_options
from slideflow_core.errors import SlideflowError


def _config(args: argparse.Namespace) -> object:
    from cluster.config import PipelineConfig

    config = PipelineConfig.from_yaml(args.config) if args.config else PipelineConfig()
    if args.run_dir:
        config = config.with_run_dir(args.run_dir)
    config.require_run_dir()
    return config


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="cohort manifest (CSV, TSV or Parquet)")
    parser.add_argument("--config", help="pipeline YAML: run_dir, stages and one section per stage")
    parser.add_argument("--run-dir", help="run directory (overrides the config's run_dir)")


def register_run(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc run MANIFEST [--config pipeline.yaml]``."""
    parser = add_command(
        subparsers,
        "run",
        help="run the pipeline's stages (tile, embed, segment, predict, export) on Ray",
        description="Run the configured stages over every slide on Ray (a local instance, "
        "or the cluster of $RAY_ADDRESS / --address). Rerunning resumes: finished slides are "
        "skipped. Writes pipeline/config.yaml, pipeline/state.json and pipeline/report.json "
        "in the run directory.",
    )
    _add_config_options(parser)
    add_ray_options(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cluster.pipeline import run

    report = run(
        args.manifest,
        _config(args),
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    print(report)
    return 0 if report.ok else 1


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray dashboard of the head, http://HEAD:8265 (default $RAY_ADDRESS)",
    )


def register_submit(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc submit MANIFEST --address http://HEAD:8265 [--config pipeline.yaml]``."""
    parser = add_command(
        subparsers,
        "submit",
        help="submit the pipeline to a Ray cluster (Jobs API); prints the job id",
        description="Submit the pipeline over a cohort as a Ray job. Slide paths must be "
        "readable on the cluster (s3:// or a shared filesystem) and the run directory absolute "
        "or s3://.",
    )
    _add_config_options(parser)
    _address(parser)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="environment variable for the job (NAME alone copies it from here); repeatable",
    )
    parser.add_argument(
        "--package",
        choices=["upload", "installed"],
        default="upload",
        help="ship this package's source with the job, or use the one in the cluster image",
    )
    parser.add_argument(
        "--skip-check",
        action="store_true",
        help="submit without first checking that the cluster's Python has the stages' modules",
    )
    parser.add_argument(
        "--pip",
        action="store_true",
        help="install modules the cluster lacks with the job (runtime_env pip)",
    )
    parser.add_argument("--job-id", help="submission id (default sfc-<random>)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its logs")
    parser.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from cluster.submit import logs, submit, wait

    env = dict(
        (item.split("=", 1)[0], item.split("=", 1)[1]) if "=" in item else (item, None)
        for item in args.env
    )
    job_id = submit(
        args.manifest,
        config=_config(args),
        address=args.address,
        env=env,
        package=args.package,
        job_id=args.job_id,
        check=not args.skip_check,
        pip=args.pip,
    )
    print(job_id)
    if not args.wait:
        return 0
    state = wait(job_id, address=args.address)
    print(logs(job_id, address=args.address))
    print(state)
    return 0 if state.status == "SUCCEEDED" else 1


def register_status(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc status JOB``."""
    parser = add_command(subparsers, "status", help="state of a submitted pipeline job")
    parser.add_argument("job_id")
    _address(parser)
    parser.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from cluster.submit import status

    state = status(args.job_id, address=args.address)
    print(state)
    return 1 if state.status in ("FAILED", "STOPPED") else 0


def register_logs(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc logs JOB``."""
    parser = add_command(subparsers, "logs", help="what a submitted pipeline job printed")
    parser.add_argument("job_id")
    _address(parser)
    parser.set_defaults(func=_logs)


def _logs(args: argparse.Namespace) -> int:
    from cluster.submit import logs

    print(logs(args.job_id, address=args.address), end="")
    return 0


def register_cancel(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc cancel JOB``."""
    parser = add_command(subparsers, "cancel", help="stop a submitted pipeline job")
    parser.add_argument("job_id")
    _address(parser)
    parser.set_defaults(func=_cancel)


def _cancel(args: argparse.Namespace) -> int:
    from cluster.submit import cancel

    stopped = cancel(args.job_id, address=args.address)
    print(f"{args.job_id}: {'stopping' if stopped else 'not running'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cluster COMMAND ...``: these commands without the ``sfc`` dispatcher."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m cluster")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = (register_run, register_submit, register_status, register_logs, register_cancel)
    for register in commands:
        register(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SlideflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
