"""``sfc segment``: nuclei of a project's stores or of one slide into cell tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from slideflow_core.cli import DeprecatedAlias, add_command, add_ray_options


class _SegmenterNames:
    """The registered segmenter names, read when argparse first needs them.

    Reading them imports the segmenters (torch for the learned head), which
    ``sfc`` must not pay for on every command: argparse only looks at ``choices``
    when ``--segmenter`` is given or ``--help`` is shown.
    """

    def _names(self) -> list[str]:
        from embedders.dense.registry import segmenter_names

        return segmenter_names()

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def register_segment(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc segment PROJECT_OR_SLIDE [--segmenter NAME] [--out TABLE]``."""
    parser = add_command(
        subparsers,
        "segment",
        help="segment nuclei into per-slide cell tables (polygons + measurements)",
        description="Segment every nucleus of a project's slide stores (on Ray, into each\n"
        "store's cells/<name> part) or of one slide store or slide file (in this process).\n"
        "Resumable per band of tiles; complete tables made the same way are skipped.",
    )
    parser.add_argument(
        "target", nargs="?", help="project folder, slide store (.zarr) or slide file"
    )
    parser.add_argument(
        "--segmenter",
        default="classical",
        choices=_SegmenterNames(),
        metavar="NAME",
        help="registered segmenter: %(choices)s (see --list for what each needs)",
    )
    parser.add_argument("--weights", help="weights file of a learned segmenter")
    parser.add_argument(
        "--target-mpp", type=float, help="µm/px to segment at (default: the segmenter's own)"
    )
    parser.add_argument("--out", help="cell table (.parquet) to write for a slide file")
    parser.add_argument("--name", help="run name (part cells/<name>; default: the segmenter)")
    parser.add_argument(
        "--slide-mpp", type=float, help="level-0 µm/px of an uncalibrated slide file"
    )
    for old, new in (("--seg-mpp", "--target-mpp"), ("--mpp", "--slide-mpp")):
        dest = new.removeprefix("--").replace("-", "_")
        parser.add_argument(
            old, dest=dest, type=float, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS
        )
    parser.add_argument("--tile-px", type=int, default=1024, help="core tile side, in pixels")
    parser.add_argument(
        "--overlap-px", type=int, default=64, help="pixels read around each core tile"
    )
    parser.add_argument("--all-tiles", action="store_true", help="segment outside tissue too")
    parser.add_argument("--overwrite", action="store_true", help="redo complete tables")
    add_ray_options(parser)
    parser.add_argument("--list", action="store_true", help="list segmenters and exit")
    parser.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    from embedders.dense import (
        SegmentationError,
        SegmentConfig,
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
    target = Path(args.target)
    if not target.exists():
        raise SegmentationError(
            f"not found: {args.target}",
            hint="give a project folder (from sfc tile), a slide store (.zarr) or a slide file",
        )
    config = SegmentConfig(
        segmenter=args.segmenter,
        weights=args.weights,
        target_mpp=args.target_mpp,
        name=args.name,
        tile_px=args.tile_px,
        overlap_px=args.overlap_px,
        tiles="all" if args.all_tiles else "tissue",
    )
    if (target / "stores").is_dir():
        report = segment_cohort(
            target,
            config,
            overwrite=args.overwrite,
            address=args.address,
            num_cpus=args.num_cpus,
            progress=not args.no_progress,
        )
        print(report)
        return 0 if report.ok else 1
    outcome = segment_slide(
        target, config=config, out=args.out, slide_mpp=args.slide_mpp, overwrite=args.overwrite
    )
    print(json.dumps(outcome.to_dict(), indent=1, default=str))
    return 0
