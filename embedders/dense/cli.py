"""``sfc segment``: nuclei of a project's stores or of one slide into cell tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from slideflow_core.cli import (
    DeprecatedAlias,
    add_command,
    add_executor_option,
    add_ray_options,
    executor_arg,
)


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
    add_executor_option(parser)
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
            executor=executor_arg(args),
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


def register_cells(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc cells train ANNOTATED_FOLDER --out WEIGHTS``."""
    parser = add_command(
        subparsers,
        "cells",
        help="train nucleus segmenters on annotated tiles",
        description="Nucleus segmenters from annotated tiles (ID.png + ID.inst.png pairs with\n"
        "an optional manifest.json of µm/px, PanNuke images.npy + masks.npy, or a slide\n"
        "with QuPath GeoJSON nucleus outlines).",
    )
    actions = parser.add_subparsers(dest="cells_command", metavar="ACTION", required=True)
    train = add_command(
        actions,
        "train",
        help="train the learned segmenter (sfc segment --segmenter learned --weights W)",
        description="Train the learned segmenter end to end on an annotated folder and write\n"
        "WEIGHTS (safetensors) with its card (WEIGHTS.card.json). Resumes from\n"
        "WEIGHTS.checkpoint.safetensors when a run with the same settings was stopped.",
    )
    train.add_argument(
        "folder",
        help="annotated folder (ID.png + ID.inst.png, or PanNuke .npy), or a slide with "
        "--annotations",
    )
    train.add_argument(
        "--annotations", help="QuPath GeoJSON of nucleus outlines (detections/cells) on FOLDER"
    )
    train.add_argument("--slide-mpp", type=float, help="level-0 µm/px of an uncalibrated slide")
    train.add_argument(
        "--typed", action="store_true", help="GeoJSON classifications become nucleus types"
    )
    train.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    train.add_argument("--validation", help="annotated folder scored after training (card)")
    train.add_argument(
        "--hold-out",
        action="store_true",
        help="train on the first of two folds of FOLDER (by source, then tile) and "
        "validate on the second",
    )
    train.add_argument("--init", help="earlier weights to fine-tune instead of from scratch")
    train.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    train.add_argument("--batch-size", type=int, default=8, help="crops per step")
    train.add_argument("--crop-px", type=int, default=256, help="crop side, pixels")
    train.add_argument("--target-mpp", type=float, default=0.25, help="working µm/px")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    train.add_argument("--max-minutes", type=float, help="stop training after this long")
    train.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    train.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_run_cells_train)


def _run_cells_train(args: argparse.Namespace) -> int:
    from embedders.dense.data import (
        AnnotationError,
        folder_licences,
        read_training_data,
        tuning_split,
    )
    from embedders.dense.fit import SegmenterTrainConfig, train_segmenter

    if args.annotations:
        from embedders.dense.geojson_data import geojson_tiles

        tiles = geojson_tiles(
            args.folder,
            args.annotations,
            mpp=args.target_mpp,
            slide_mpp=args.slide_mpp,
            typed=args.typed,
        )
    else:
        tiles = read_training_data(args.folder)
    validation = read_training_data(args.validation) if args.validation else []
    if args.hold_out:
        if validation:
            raise AnnotationError(
                "--hold-out and --validation both choose validation tiles",
                hint="give one of them",
            )
        by_id = {t.id: t for t in tiles}
        train_ids, held_ids = tuning_split(sorted(by_id))
        tiles, validation = [by_id[i] for i in train_ids], [by_id[i] for i in held_ids]
    try:
        config = SegmenterTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            crop_px=args.crop_px,
            mpp=args.target_mpp,
            lr=args.lr,
            max_minutes=args.max_minutes,
            threads=args.threads,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        raise AnnotationError(str(exc), hint="see sfc cells train --help") from exc
    data = {
        "folder": str(Path(args.folder).resolve()),
        "annotations": str(Path(args.annotations).resolve()) if args.annotations else None,
        "licences": [] if args.annotations else folder_licences(args.folder),
        "validation_folder": str(Path(args.validation).resolve()) if args.validation else None,
        "split": "hold-out: fold 1 of 2 trains, fold 2 validates" if args.hold_out else None,
    }
    result = train_segmenter(
        tiles, out=args.out, config=config, validation=validation, init=args.init, data=data
    )
    summary = {
        "weights": str(args.out),
        "steps": len(result.history),
        "seconds": round(result.seconds, 1),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "validation": result.validation,
    }
    print(json.dumps(summary, indent=1))
    return 0
