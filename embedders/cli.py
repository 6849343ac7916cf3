"""``sfc embed``: the embedding stage's command (an ``sfc.commands`` entry point)."""

from __future__ import annotations

import argparse
from pathlib import Path

from slideflow_core.cli import (
    add_command,
    add_executor_option,
    add_ray_options,
    executor_arg,
    existing_folder,
)


def register_embed(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc embed PROJECT --model NAME``."""
    parser = add_command(
        subparsers,
        "embed",
        help="embed a tiled project's tiles into features/<name> (Ray actors)",
        description="Embed the tiles of every store in PROJECT/stores with one model, writing\n"
        "features/<name> into each store. Resumable: slides whose features were made the\n"
        "same way are skipped; failed slides are reported and the rest go on.",
    )
    parser.add_argument("project", help="project folder (from `sfc tile`)")
    parser.add_argument(
        "--model",
        required=True,
        help="registered embedder (handcrafted, uni, dinov2_vits14, ...) or timm:<name>",
    )
    parser.add_argument("--weights", help="weights file or Hugging Face id")
    parser.add_argument("--manifest", help="only the slides of this manifest")
    parser.add_argument(
        "--tiles", choices=["keep", "all"], default="keep", help="tiles passing QC, or all"
    )
    parser.add_argument("--batch-size", type=int, help="tiles per forward pass (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--num-actors", type=int, help="embedder actors (default: one per GPU, or one on CPU)"
    )
    parser.add_argument("--name", help="feature part name (default: the model name)")
    parser.add_argument(
        "--dtype", choices=["float16", "float32"], default="float16", help="stored precision"
    )
    parser.add_argument(
        "--loader-threads", type=int, default=2, help="threads reading tiles ahead of the model"
    )
    parser.add_argument("--overwrite", action="store_true", help="re-embed existing features")
    parser.add_argument(
        "--export-h5",
        metavar="DIR",
        help="also write TRIDENT/CLAM feature files under DIR (TRIDENT: its job layout "
        "DIR/<mag>x_<px>px_<overlap>px_overlap/features_<name>/<slide_id>.h5; CLAM: "
        "DIR/h5_files/ and DIR/pt_files/)",
    )
    parser.add_argument(
        "--h5-layout",
        choices=["trident", "clam"],
        default="trident",
        help="layout of --export-h5; pair with `sfc tiles export-h5 --layout` to the same DIR",
    )
    add_executor_option(parser)
    add_ray_options(parser)
    parser.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from embedders.config import EmbedConfig
    from embedders.h5 import export_features
    from embedders.stage import embed_cohort

    project = existing_folder(args.project, "project folder", hint="tile a cohort into it first")
    config = EmbedConfig(
        model=args.model,
        weights=args.weights,
        name=args.name,
        tiles=args.tiles,
        batch_size=args.batch_size,
        device=args.device,
        num_actors=args.num_actors,
        dtype=args.dtype,
        loader_threads=args.loader_threads,
    )
    report = embed_cohort(
        project,
        config,
        cohort=args.manifest,
        overwrite=args.overwrite,
        executor=executor_arg(args),
        address=args.address,
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    print(report)
    if args.export_h5:
        part = report.part.split("/", 1)[1]
        written = [
            path
            for result in report.results
            if result.status != "failed"
            for path in export_features(result.store, part, args.export_h5, layout=args.h5_layout)
        ]
        print(f"exported {len(written)} {args.h5_layout} files to {Path(args.export_h5).resolve()}")
    print(f"features: {report.part} in {project.resolve() / 'stores'}/*.zarr")
    return 0 if report.ok else 1
