"""``sfc mil``: train a run from a YAML config, predict a project with it, show its report.

An ``sfc.commands`` entry point. Nothing heavy is imported until a command runs,
so ``sfc`` starts without torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slideflow_core.cli import add_command, add_executor_option, add_ray_options, executor_arg


def register_mil(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc mil train|predict|report``."""
    parser = add_command(
        subparsers,
        "mil",
        help="MIL runs: train from a YAML config, predict a project, show a run's report",
        description="Multiple-instance learning over the slides' feature parts.\n\n"
        "  sfc mil train CONFIG.yaml       cross-validated training into <project>/runs/<name>\n"
        "  sfc mil predict RUN PROJECT     a trained run on every slide store of a project\n"
        "  sfc mil report RUN              a run's metrics (95% CI) and its report files",
    )
    actions = parser.add_subparsers(dest="mil_command", metavar="ACTION")
    parser.set_defaults(func=lambda _: parser.print_help() or 2)

    train = add_command(
        actions,
        "train",
        help="train and test a run described by a YAML config",
        description="Train and test every fold of the run that CONFIG describes (data, task, "
        "model, splits, train; see the README), writing <project>/runs/<name> and each "
        "tested slide's attention/<name>. An existing run of that name is refused unless "
        "--overwrite.",
    )
    train.add_argument("config", help="run config (YAML); relative paths from its folder")
    train.add_argument("--name", help="run name (default: the config's name)")
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing run of that name"
    )
    train.set_defaults(func=_train)

    predict = add_command(
        actions,
        "predict",
        help="predict every slide store of a project with a trained run",
        description="Apply a trained run (the mean of its folds' models, or one fold) to the "
        "run's feature part of every slide store of PROJECT: per-tile scores into "
        "attention/<name> of each store, one row per slide into "
        "PROJECT/predictions/<name>.csv, on Ray tasks. Resumable: slides predicted the same "
        "way are skipped (and keep their row).",
    )
    predict.add_argument("run", help="trained run folder (<project>/runs/<name>)")
    predict.add_argument("project", help="project whose stores hold the run's features")
    predict.add_argument("--manifest", help="only the slides of this manifest (adds labels)")
    predict.add_argument("--fold", help="one fold's model, by name or index (default: all)")
    predict.add_argument("--name", help="attention part and table name (default: the run's)")
    predict.add_argument("--overwrite", action="store_true", help="predict every slide again")
    add_executor_option(predict)
    add_ray_options(predict)
    predict.set_defaults(func=_predict)

    report = add_command(
        actions,
        "report",
        help="print a run's metrics with 95%% CI and where its report and plots are",
        description="Print the metrics of a finished run (each fold and pooled, with the "
        "bootstrap 95% CI of the headline metric) and the paths of report.html and plots.",
    )
    report.add_argument("run", help="run folder (<project>/runs/<name>)")
    report.set_defaults(func=_report)


def _train(args: argparse.Namespace) -> int:
    from mil.experiment import Experiment

    experiment = Experiment.from_config(args.config, name=args.name, overwrite=args.overwrite)
    results = experiment.run()
    print(results.summary())
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mil.stage import predict_cohort, predictions_path

    report = predict_cohort(
        args.run,
        args.project,
        args.manifest,
        fold=args.fold,
        name=args.name,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        executor=executor_arg(args),
        address=args.address,
        num_cpus=args.num_cpus,
    )
    print(report)
    name = report.part.split("/", 1)[1]
    print(f"predictions: {predictions_path(report.project, name)}")
    print(f"attention: {report.part} in {Path(report.project) / 'stores'}/*.zarr")
    return 0 if report.ok else 1


def _report(args: argparse.Namespace) -> int:
    from mil.experiment import Experiment

    results = Experiment.load(args.run).results
    assert results is not None  # load reads them
    print(results.summary())
    return 0
