"""``sfc export``: slide stores to QuPath GeoJSON (and tile heatmaps to PNG).

One store goes to the file (or folder) given. A project or a run folder goes
through the export stage (:class:`~slideflow_core.geojson.stage.ExportStage`,
run by :func:`~slideflow_core.stages.run_cohort`): one file per slide in a
folder, resumable, with the usual report and status files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slideflow_core.cli import (
    CommandError,
    DeprecatedAlias,
    add_command,
    add_executor_option,
    add_ray_options,
    executor_arg,
)
from slideflow_core.geojson.export import LAYERS, is_geojson_name


def register_export(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc export STORE_OR_PROJECT [--out FILE_OR_FOLDER]``."""
    parser = add_command(
        subparsers,
        "export",
        help="write tissue, tiles (with scores) and cells as QuPath GeoJSON",
        description="Stream slide stores' overlays to GeoJSON that QuPath opens.\n"
        "  one store:         --out S1.geojson[.gz] writes that file (.ndjson writes one\n"
        "                     feature per line for streaming tools; QuPath does not import\n"
        "                     .ndjson, give it .geojson or .geojson.gz);\n"
        "                     --out FOLDER writes FOLDER/<slide_id>.geojson.gz\n"
        "  project or runs/R: one <slide_id>.geojson.gz per slide (and a heatmap PNG when\n"
        "                     the run scored it) in --out FOLDER (default <project>/exports);\n"
        "                     a rerun skips slides whose files are current",
    )
    parser.add_argument(
        "target",
        metavar="STORE_OR_PROJECT",
        help="<slide>.zarr, a project, or <project>/runs/<run>",
    )
    parser.add_argument("--out", help="output file (one store) or folder")
    parser.add_argument(
        "--what",
        action="append",
        choices=[*LAYERS, "all"],
        help="layer to export (repeat for several; default: all)",
    )
    parser.add_argument("--run", help="MIL run whose scores become tile measurements")
    parser.add_argument(
        "--origin",
        choices=["qupath", "slide"],
        default="qupath",
        help="qupath: coordinates from the slide's bounds corner, as QuPath shows it; "
        "slide: the full level-0 frame",
    )
    parser.add_argument(
        "--tile-type", choices=["tile", "detection"], default="tile", help="QuPath objectType"
    )
    parser.add_argument("--keep-only", action="store_true", help="only tiles that passed QC")
    parser.add_argument(
        "--simplify-px", type=float, metavar="PX", help="simplify polygons (level-0 px)"
    )
    parser.add_argument(
        "--simplify",
        dest="simplify_px",
        type=float,
        action=DeprecatedAlias,
        new="--simplify-px",
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--precision", type=int, default=2, help="decimals kept in coordinates")
    parser.add_argument(
        "--no-gzip", dest="gzip", action="store_false", help="write .geojson, not .geojson.gz"
    )
    parser.add_argument("--heatmap", metavar="PNG", help="one store: also draw its heatmap here")
    parser.add_argument(
        "--no-heatmap", action="store_true", help="project: draw no heatmaps of the run's scores"
    )
    parser.add_argument("--column", help="value the heatmap shows (default: the run's first)")
    parser.add_argument("--cells", metavar="PARQUET", help="one store: this cell table instead")
    parser.add_argument(
        "--overwrite", action="store_true", help="project: redo slides whose files are current"
    )
    add_executor_option(parser)
    add_ray_options(parser)
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from slideflow_core.geojson.export import find_stores

    stores, run = find_stores(args.target)
    run = args.run or run
    target = Path(args.target)
    if (target / "zarr.json").is_file():
        return _export_store(args, stores[0], run)
    return _export_project(args, stores, run)


def _export_store(args: argparse.Namespace, store: Path, run: str | None) -> int:
    from slideflow_core.geojson.export import ExportOptions, export_store

    if args.out is None:
        raise CommandError(
            "--out is needed to export one store",
            hint="give a file (--out S1.geojson.gz) or a folder (--out exports/)",
        )
    out = Path(args.out)
    if not is_geojson_name(out):
        out = out / f"{store.name.removesuffix('.zarr')}.geojson{'.gz' if args.gzip else ''}"
    options = ExportOptions(
        what=tuple(args.what or ["all"]),
        run=run,
        origin=args.origin,
        tile_object_type=args.tile_type,
        keep_only=args.keep_only,
        precision=args.precision,
        simplify_px=args.simplify_px,
        cells_table=args.cells,
    )
    print(export_store(store, out, options=options))
    if args.heatmap:
        from slideflow_core.viewer.heatmap import write_heatmap

        png = write_heatmap(store, args.heatmap, run=run, column=args.column)
        print(f"heatmap: {png}")
    return 0


def _export_project(args: argparse.Namespace, stores: list[Path], run: str | None) -> int:
    from slideflow_core.geojson.stage import ExportConfig, ExportStage
    from slideflow_core.stages import run_cohort

    if args.out is not None and is_geojson_name(args.out):
        raise CommandError(
            f"{args.target} is a project or run folder, but --out {args.out} names one file",
            hint="give a folder for one file per slide (--out exports/), or export one "
            "store to a file: sfc export <project>/stores/<slide_id>.zarr --out "
            f"{args.out}",
        )
    for option, value in (("--heatmap", args.heatmap), ("--cells", args.cells)):
        if value:
            raise CommandError(
                f"{option} takes one store, not a project",
                hint=f"export one store with {option} (sfc export <project>/stores/"
                "<slide_id>.zarr ...); a project's heatmaps go to its exports folder",
            )
    config = ExportConfig(
        what=tuple(args.what or ["all"]),
        run=run,
        origin=args.origin,
        tile_type=args.tile_type,
        keep_only=args.keep_only,
        simplify_px=args.simplify_px,
        precision=args.precision,
        gzip=args.gzip,
        heatmap=not args.no_heatmap,
        column=args.column,
        out=args.out,
    )
    stage = ExportStage(config)
    project = stores[0].parent.parent
    report = run_cohort(
        stage,
        project,
        [store.name.removesuffix(".zarr") for store in stores],
        overwrite=args.overwrite,
        executor=executor_arg(args),
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    print(report)
    print(f"exports: {stage.folder(project)}")
    return 0 if report.ok else 1
