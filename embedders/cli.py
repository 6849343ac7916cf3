"""``sfc embed``: the embedding stage's command (an ``sfc.commands`` entry point)."""

from __future__ import annotations

import argparse
from pathlib import Path

from slideflow_core.cli import add_ray_options


def register_embed(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc embed PROJECT --model NAME``."""
    parser = subparsers.add_parser(
        "embed",
        help="embed a tiled project's tiles into features/<model> (Ray actors)",
        description="Embed the tiles of every store in PROJECT/stores with one model, "
        "writing features/<model> into each store. Resumable: slides whose features "
        "were made the same way are skipped; failed slides are reported and the rest go on.",
    )
    parser.add_argument("project", help="project directory (from `sfc tile`)")
    parser.add_argument("--model", required=True, help="embedder name (sfc-registered or timm:…)")
    parser.add_argument("--weights", help="weights file or Hugging Face id")
    parser.add_argument("--manifest", help="only the slides of this manifest")
    parser.add_argument("--tiles", choices=["keep", "all"], default="keep", help="QC-kept or all")
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--num-actors", type=int, help="embedder actors (default: one per GPU)")
    parser.add_argument("--name", help="feature part name (default: the model's id)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--overwrite", action="store_true", help="re-embed existing features")
    parser.add_argument(
        "--export-h5", metavar="DIR", help="also write TRIDENT/CLAM feature files to DIR"
    )
    parser.add_argument(
        "--h5-layout", choices=["trident", "clam"], default="trident", help="layout of --export-h5"
    )
    add_ray_options(parser)
    parser.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from embedders.h5 import export_features
    from embedders.run import embed_cohort

    report = embed_cohort(
        args.project,
        args.model,
        weights=args.weights,
        cohort=args.manifest,
        tiles=args.tiles,
        batch_size=args.batch_size,
        device=args.device,
        num_actors=args.num_actors,
        overwrite=args.overwrite,
        name=args.name,
        dtype=args.dtype,
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    print(report)
    part = report.part.split("/", 1)[1]
    if args.export_h5:
        written = [
            path
            for result in report.results
            if result.status != "failed"
            for path in export_features(result.store, part, args.export_h5, layout=args.h5_layout)
        ]
        print(f"exported {len(written)} {args.h5_layout} files to {Path(args.export_h5).resolve()}")
    print(f"features: {report.part} in {Path(args.project).resolve() / 'stores'}/*.zarr")
    return 0 if report.ok else 1
