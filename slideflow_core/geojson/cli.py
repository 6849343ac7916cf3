"""``sfc export``: slide stores to QuPath GeoJSON (and tile heatmaps to PNG)."""

from __future__ import annotations

import argparse

from slideflow_core.geojson.export import LAYERS


def register_export(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc export RUN_OR_STORE --what ... --out FILE``."""
    parser = subparsers.add_parser(
        "export",
        help="write tissue, tiles (with scores) and cells as QuPath GeoJSON",
        description="Stream a slide store's overlays to .geojson / .geojson.gz (or .ndjson). "
        "Give one store and a file, or a project / runs/<run> folder and an output folder "
        "(one file per slide).",
    )
    parser.add_argument(
        "target", metavar="RUN_OR_STORE", help="<slide>.zarr, project or runs/<run>"
    )
    parser.add_argument(
        "--what",
        action="append",
        choices=[*LAYERS, "all"],
        help="layer to export (repeat for several; default all)",
    )
    parser.add_argument("--out", required=True, help="output file, or folder for several slides")
    parser.add_argument("--run", help="MIL run whose scores become tile measurements")
    parser.add_argument(
        "--origin",
        choices=["qupath", "slide"],
        default="qupath",
        help="qupath: subtract the slide's OpenSlide bounds offset as QuPath does (default); "
        "slide: keep the full level-0 frame",
    )
    parser.add_argument(
        "--tile-type",
        choices=["tile", "detection"],
        default="tile",
        help="QuPath objectType of tiles",
    )
    parser.add_argument("--keep-only", action="store_true", help="only tiles that passed QC")
    parser.add_argument(
        "--simplify", type=float, metavar="PX", help="simplify polygons (level-0 px)"
    )
    parser.add_argument("--precision", type=int, default=2, help="decimals kept in coordinates")
    parser.add_argument("--ndjson", action="store_true", help="newline-delimited features")
    parser.add_argument(
        "--cells", metavar="PARQUET", help="cell table to export instead of the store's"
    )
    parser.add_argument("--suffix", default=".geojson", help="file suffix when writing a folder")
    parser.add_argument(
        "--heatmap", metavar="PNG", help="also draw the tile heatmap here (one store)"
    )
    parser.add_argument(
        "--column", help="value drawn in the heatmap (default: the run's first score)"
    )
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from slideflow_core.geojson.export import ExportOptions, export_stores, find_stores

    stores, folder_run = find_stores(args.target)
    options = ExportOptions(
        what=tuple(args.what or ["all"]),
        run=args.run or folder_run,
        origin=args.origin,
        tile_object_type=args.tile_type,
        keep_only=args.keep_only,
        precision=args.precision,
        simplify_px=args.simplify,
        ndjson=True if args.ndjson else None,
        cells_table=args.cells,
    )
    summaries = export_stores(args.target, args.out, options=options, suffix=args.suffix)
    for summary in summaries:
        print(summary)
    if args.heatmap:
        from slideflow_core.viewer.heatmap import write_heatmap

        if len(stores) != 1:
            print("--heatmap needs a single store; skipped")
        else:
            path = write_heatmap(stores[0], args.heatmap, run=options.run, column=args.column)
            print(f"heatmap: {path}")
    return 1 if any(s.error for s in summaries) else 0
