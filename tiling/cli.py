"""``sfc tile`` and ``sfc tiles``: the tiling stage's commands (entry points)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slideflow_core.cli import (
    MANIFEST_HINT,
    DeprecatedAlias,
    add_command,
    add_executor_option,
    add_ray_options,
    executor_arg,
    existing_file,
    existing_folder,
)

STORE_HINT = "give a slide store: <project>/stores/<slide_id>.zarr (made by sfc tile)"


def _deprecated(parser: argparse._ActionsContainer, old: str, new: str, **kwargs: object) -> None:
    """The old spelling ``old`` of option ``new``: same value, a warning, hidden from help."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(
        old, dest=dest, action=DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs
    )


def register_tile(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc tile MANIFEST --out DIR``."""
    from tiling.config import CODECS, QC_SCALES
    from tiling.stain import stain_normalizers
    from tiling.tissue import tissue_detectors

    parser = add_command(
        subparsers,
        "tile",
        help="detect tissue and tile a cohort into per-slide Zarr stores (on Ray)",
        description="Tile every slide of a manifest at a physical resolution into "
        "<out>/stores/<slide_id>.zarr. Resumable: complete stores with the same "
        "configuration are skipped; failed slides are reported and the rest go on.",
    )
    parser.add_argument("manifest", help="cohort manifest (CSV, TSV or Parquet)")
    parser.add_argument("--out", required=True, help="project directory")
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument(
        "--target-mpp",
        type=float,
        help="µm per pixel of the tiles (0.5 when no resolution option is given)",
    )
    _deprecated(resolution, "--mpp", "--target-mpp", type=float)
    resolution.add_argument("--magnification", help="e.g. 20x (= 0.5 µm/px)")
    resolution.add_argument("--tile-um", type=float, help="physical tile side in µm")
    parser.add_argument("--tile-px", type=int, default=256, help="tile side in pixels")
    parser.add_argument(
        "--overlap-px", type=int, default=0, help="overlap of neighbouring tiles in pixels"
    )
    _deprecated(parser, "--overlap", "--overlap-px", type=int)
    parser.add_argument(
        "--edge", choices=["drop", "pad"], default="drop", help="tiles crossing the slide's edge"
    )
    parser.add_argument(
        "--tissue", choices=tissue_detectors.names(), default="clam", help="tissue detector"
    )
    parser.add_argument(
        "--min-tissue", type=float, default=0.05, help="minimum tissue fraction in the mask"
    )
    parser.add_argument("--roi", help="QuPath GeoJSON whose polygons restrict tiling")
    parser.add_argument("--stain", choices=stain_normalizers.names(), help="stain normalisation")
    parser.add_argument("--stain-reference", help="image the stain normaliser is fitted on")
    parser.add_argument(
        "--coords-only", action="store_true", help="store coordinates and QC, not pixels"
    )
    parser.add_argument(
        "--codec",
        choices=CODECS,
        default="auto",
        help="how pixels are stored: auto = the slide's own JPEG tiles, undecoded, when the "
        "grid is theirs, else jpeg; zstd, lz4, none are lossless",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=90, help="quality of re-encoded JPEG tiles (1-100)"
    )
    parser.add_argument(
        "--qc-scale",
        type=int,
        choices=QC_SCALES,
        default=8,
        help="QC looks at tiles reduced this many times (1: full resolution)",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-tile incompatible stores")
    add_executor_option(parser)
    add_ray_options(parser)
    parser.set_defaults(func=_run_tile)


def _run_tile(args: argparse.Namespace) -> int:
    from tiling.config import TilingConfig
    from tiling.stage import tile_cohort

    manifest = existing_file(args.manifest, "manifest", hint=MANIFEST_HINT)
    config = TilingConfig(
        mpp=args.target_mpp,
        magnification=args.magnification,
        tile_um=args.tile_um,
        tile_px=args.tile_px,
        overlap_px=args.overlap_px,
        edge=args.edge,
        tissue_method=args.tissue,
        min_tissue_fraction=args.min_tissue,
        roi=args.roi,
        stain=args.stain,
        stain_reference=args.stain_reference,
        store_pixels=not args.coords_only,
        codec=args.codec,
        jpeg_quality=args.jpeg_quality,
        qc_scale=args.qc_scale,
    )
    report = tile_cohort(
        manifest,
        args.out,
        config,
        address=args.address,
        num_cpus=args.num_cpus,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        executor=executor_arg(args),
    )
    print(report)
    print(f"stores: {Path(args.out).resolve() / 'stores'}")
    return 0 if report.ok else 1


def register_tiles(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc tiles info|export-h5|import-h5``."""
    parser = add_command(subparsers, "tiles", help="inspect tile stores; CLAM/TRIDENT .h5 interop")
    actions = parser.add_subparsers(dest="tiles_command", metavar="ACTION", required=True)

    info = add_command(actions, "info", help="summarise a slide store's tiling part")
    info.add_argument("store", help="<project>/stores/<slide_id>.zarr")
    info.set_defaults(func=_run_info)

    export = add_command(
        actions,
        "export-h5",
        help="write CLAM/TRIDENT coordinate .h5 files where those tools look for them",
        description="Write each store's tile coordinates in CLAM's or TRIDENT's layout.\n"
        "clam: OUT/patches/<slide_id>.h5; patch_size = pixels read at patch_level (run\n"
        "CLAM's extract_features_fp.py with --data_h5_dir OUT --target_patch_size TILE_PX).\n"
        "trident: OUT/<mag>x_<px>px_<overlap>px_overlap/patches/<slide_id>_patches.h5;\n"
        "patch_size = pixels at target_magnification, plus patch_size_level0 (use OUT as\n"
        "TRIDENT's --job_dir). Magnifications are integers when the slide records its\n"
        "objective power, else the exact ratio. Only QC-kept tiles (the ones sfc embed\n"
        "embeds) unless --all-tiles.",
    )
    export.add_argument("source", help="a store, or a project directory (all its stores)")
    export.add_argument(
        "--out", required=True, help="root folder (CLAM data_h5_dir, TRIDENT job_dir)"
    )
    export.add_argument(
        "--layout", choices=["trident", "clam"], default="trident", help="whose layout to write"
    )
    export.add_argument("--all-tiles", action="store_true", help="also export tiles that failed QC")
    export.set_defaults(func=_run_export)

    imp = add_command(actions, "import-h5", help="make a coordinates-only store from an .h5")
    imp.add_argument("h5", help="CLAM/TRIDENT <slide_id>_patches.h5")
    imp.add_argument("slide", help="the slide the coordinates belong to")
    imp.add_argument("--store", required=True, help="store to create (.zarr)")
    imp.add_argument("--slide-mpp", type=float, help="level-0 µm/px of an uncalibrated slide")
    _deprecated(imp, "--mpp", "--slide-mpp", type=float)
    imp.set_defaults(func=_run_import)


def _run_info(args: argparse.Namespace) -> int:
    from tiling.view import open_store

    store = open_store(existing_folder(args.store, "slide store", hint=STORE_HINT))
    info = store.info
    qc = store.qc()
    summary = {
        "slide_id": store.slide_id,
        "tiles": len(store),
        "kept": int(qc["keep"].sum()),
        "pixels_stored": store.has_pixels,
        "mpp_requested": info["mpp_requested"],
        "mpp_actual": info["mpp_actual"],
        "level": info["level"],
        "tile_px": info["tile_px"],
        "read_method": info.get("read_method"),
        "codec": info.get("codec"),
        "qc_scale": info.get("qc_scale"),
        "qc_medians": {c: float(qc[c].median()) for c in qc.columns if c not in ("x", "y")},
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from tiling.h5 import export_h5

    source = existing_folder(
        args.source, "store or project", hint=f"{STORE_HINT}, or the project folder"
    )
    stores = (
        sorted((source / "stores").glob("*.zarr")) if (source / "stores").is_dir() else [source]
    )
    for store in stores:
        print(export_h5(store, args.out, layout=args.layout, all_tiles=args.all_tiles))
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from tiling.h5 import import_h5

    h5 = existing_file(args.h5, "coordinates file")
    slide = existing_file(args.slide, "slide")
    print(import_h5(h5, slide, args.store, mpp=args.slide_mpp))
    return 0
