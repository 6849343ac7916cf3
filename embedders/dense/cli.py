"""``sfc segment``: nuclei of a project's stores or of one slide into cell tables."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slideflow_core.cli import add_ray_options


def register_segment(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc segment PROJECT_OR_SLIDE [--segmenter NAME] [--out TABLE]``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment nuclei into per-slide cell tables (polygons + measurements)",
        description="Segment every nucleus of a project's slide stores (on Ray, into each "
        "store's cells/<name> part) or of one slide store or slide file (in this process). "
        "Resumable per band of tiles; complete tables made the same way are skipped.",
    )
    parser.add_argument(
        "target", nargs="?", help="project directory, slide store (.zarr) or slide file"
    )
    parser.add_argument("--segmenter", default="classical", help="segmenter name (--list)")
    parser.add_argument("--weights", help="weights file for a learned segmenter")
    parser.add_argument("--seg-mpp", type=float, help="µm/px to segment at (classical)")
    parser.add_argument("--out", help="cell table (.parquet) to write for a slide file")
    parser.add_argument("--name", help="run name (part cells/<name>; default: segmenter)")
    parser.add_argument("--mpp", type=float, help="level-0 µm/px of an uncalibrated slide")
    parser.add_argument("--tile-px", type=int, default=1024, help="core tile side")
    parser.add_argument("--overlap-px", type=int, default=64, help="overlap on each side")
    parser.add_argument("--all-tiles", action="store_true", help="segment outside tissue too")
    parser.add_argument("--overwrite", action="store_true")
    add_ray_options(parser)
    parser.add_argument("--list", action="store_true", help="list segmenters and exit")
    parser.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from embedders.dense import (
        SegmentationError,
        SegmentConfig,
        create_segmenter,
        list_segmenters,
        segment_cohort,
        segment_slide,
    )

    if args.list:
        for row in list_segmenters():
            state = "available" if row["available"] else f"unavailable: {row['reason']}"
            print(f"{row['name']:<15} {state}  ({row.get('description', '')})")
        return 0
    if args.target is None:
        raise SegmentationError(
            "sfc segment needs a project, a slide store or a slide",
            hint="sfc segment PROJECT_OR_SLIDE (or --list to see the segmenters)",
        )
    options = {}
    if args.weights:
        options["weights"] = args.weights
    if args.seg_mpp:
        options["mpp"] = args.seg_mpp
    segmenter = create_segmenter(args.segmenter, **options)
    config = SegmentConfig(
        tile_px=args.tile_px,
        overlap_px=args.overlap_px,
        tiles="all" if args.all_tiles else "tissue",
    )
    target = Path(args.target)
    if (target / "stores").is_dir():
        report = segment_cohort(
            target,
            segmenter,
            config=config,
            name=args.name,
            overwrite=args.overwrite,
            address=args.address,
            num_cpus=args.num_cpus,
            progress=not args.no_progress,
        )
        print(report)
        return 0 if report.ok else 1
    result = segment_slide(
        target,
        segmenter,
        config=config,
        name=args.name,
        out=args.out,
        mpp=args.mpp,
        overwrite=args.overwrite,
    )
    print(json.dumps(result.to_dict(), indent=1, default=str))
    return 0
