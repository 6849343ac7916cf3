"""Core ``sfc`` subcommands: ``info``, ``cohort`` and ``synth``.

Each ``register_*`` function is an entry point of the ``sfc.commands`` group.
Commands are thin: they parse arguments, call the Python API and print.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from slideflow_core.cli import (
    MANIFEST_HINT,
    DeprecatedAlias,
    add_command,
    existing_file,
    existing_folder,
    output_file,
)
from slideflow_core.slides import list_readers, open_slide, readers


def _add_backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *readers.names()],
        help="slide reader to use (auto: the first that decodes the file)",
    )


def _add_slide_mpp_option(
    parser: argparse.ArgumentParser, help: str, default: float | None = None
) -> None:
    """``--slide-mpp`` (the slide's own level-0 µm/px), and its old spelling ``--mpp``."""
    parser.add_argument("--slide-mpp", type=float, default=default, help=help)
    parser.add_argument(
        "--mpp",
        dest="slide_mpp",
        type=float,
        action=DeprecatedAlias,
        new="--slide-mpp",
        help=argparse.SUPPRESS,
    )


# -- sfc info ------------------------------------------------------------------------
def register_info(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc info SLIDE``."""
    parser = add_command(
        subparsers,
        "info",
        help="show a slide's levels, resolution, vendor and associated images",
        description="Open a slide and print what a pipeline needs to know about it.",
    )
    parser.add_argument("slide", help="slide file (SVS, NDPI, TIFF, DICOM, ...)")
    _add_backend_option(parser)
    _add_slide_mpp_option(parser, "level-0 µm/px of an uncalibrated slide (its calibration)")
    parser.add_argument("--thumbnail", metavar="PNG", help="also write a thumbnail PNG here")
    parser.add_argument("--max-px", type=int, default=1024, help="thumbnail's longer side")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--readers", action="store_true", help="list slide readers and exit")
    parser.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    if args.readers:
        for row in list_readers():
            state = "available" if row["available"] else f"unavailable: {row['reason']}"
            print(f"{row['name']:<10} {state:<12} {row.get('description', '')}")
        return 0
    with open_slide(args.slide, backend=args.backend, mpp=args.slide_mpp) as slide:
        info = slide.describe()
        if args.thumbnail:
            write_png(slide.thumbnail(args.max_px), args.thumbnail)
            info["thumbnail"] = str(Path(args.thumbnail).resolve())
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text for a :meth:`Slide.describe` dictionary."""
    backend = info["backend"]
    lines = [
        f"slide       {info['slide_id']}  ({info['path']})",
        f"backend     {backend['backend']} ({backend['reason']})",
    ]
    lines += [f"            {name} failed: {err}" for name, err in backend["tried"]]
    width, height = info["dimensions"]
    mpp = (
        f"{info['mpp']:.4f} µm/px from {info['mpp_source']}"
        if info["mpp"]
        else "MISSING (pass --slide-mpp or fill the manifest's mpp column)"
    )
    magnification = f"{info['magnification']:g}x" if info["magnification"] else "unknown"
    lines += [
        f"vendor      {info['vendor'] or 'unknown'}",
        f"size        {width} x {height} px",
        f"mpp         {mpp}",
        f"objective   {magnification}",
    ]
    if info["bounds"]:
        lines.append("bounds      x={} y={} w={} h={}".format(*info["bounds"]))
    lines.append("levels      level  width x height   downsample  µm/px")
    level_mpp = info["level_mpp"] or [None] * info["level_count"]
    for level, ((w, h), ds, mpp_l) in enumerate(
        zip(info["level_dimensions"], info["level_downsamples"], level_mpp, strict=True)
    ):
        mpp_text = f"{mpp_l:.4f}" if mpp_l else "-"
        lines.append(f"            {level:>5}  {w:>6} x {h:<6}  {ds:>10.3f}  {mpp_text}")
    lines.append(f"associated  {', '.join(info['associated_images']) or 'none'}")
    if "thumbnail" in info:
        lines.append(f"thumbnail   {info['thumbnail']}")
    return "\n".join(lines)


def write_png(image: Any, path: str | Path) -> Path:
    """Write an RGB array as PNG, creating the parent folder."""
    from PIL import Image

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out)
    return out


# -- sfc cohort ----------------------------------------------------------------------
def register_cohort(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc cohort validate`` and ``sfc cohort from-folder``."""
    parser = add_command(
        subparsers,
        "cohort",
        help="validate or build cohort manifests",
        description="Cohort manifests.",
    )
    actions = parser.add_subparsers(dest="cohort_command", metavar="ACTION", required=True)

    validate = add_command(
        actions,
        "validate",
        help="check a manifest and report every bad row at once",
        description="Check a CSV/Parquet manifest: required columns, safe unique slide ids, "
        "existing files, numeric mpp, consistent label types; --deep also opens every slide.",
    )
    validate.add_argument("manifest", help="CSV, TSV or Parquet manifest")
    validate.add_argument("--deep", action="store_true", help="open every slide and check mpp")
    validate.add_argument("--json", action="store_true", help="print problems as JSON")
    validate.set_defaults(func=_run_cohort_validate)

    from_folder = add_command(
        actions,
        "from-folder",
        help="write a manifest listing every slide file in a folder",
        description="Build a manifest (slide_id from the file name) from a folder of slides.",
    )
    from_folder.add_argument("folder")
    from_folder.add_argument("--out", required=True, help="manifest to write (.csv or .parquet)")
    from_folder.set_defaults(func=_run_cohort_from_folder)


def _run_cohort_validate(args: argparse.Namespace) -> int:
    from slideflow_core.cohort import Cohort

    cohort = Cohort.from_manifest(existing_file(args.manifest, "manifest", hint=MANIFEST_HINT))
    report = cohort.validate(deep=args.deep)
    if args.json:
        print(json.dumps([p.__dict__ for p in report.problems], indent=2, default=str))
    else:
        print(report)
    return 0 if report.ok else 1


def _run_cohort_from_folder(args: argparse.Namespace) -> int:
    from slideflow_core.cohort import Cohort

    cohort = Cohort.from_folder(existing_folder(args.folder, "slide folder"))
    cohort.write(args.out)
    print(f"wrote {len(cohort)} slides to {args.out}")
    return 0


# -- sfc synth -----------------------------------------------------------------------
def register_synth(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc synth OUT`` (a synthetic H&E-like slide, or a labelled cohort, with truth)."""
    parser = add_command(
        subparsers,
        "synth",
        help="write a synthetic pyramidal H&E-like slide (or a labelled cohort) with ground truth",
        description="Stream a JPEG-tiled Aperio-style TIFF of any size with tissue, nuclei, "
        "pen marks, blur and optional tumour foci, and save its ground truth beside it. "
        "With --cohort N, OUT is a folder that gets N slides, about half with tumour, a "
        "manifest.csv (label tumour/normal) and QuPath GeoJSON tumour outlines.",
    )
    parser.add_argument("out", help="output slide path (.svs or .tiff), or folder with --cohort")
    parser.add_argument("--width", type=int, default=8192, help="level-0 width in px")
    parser.add_argument("--height", type=int, default=6144, help="level-0 height in px")
    _add_slide_mpp_option(parser, "level-0 µm/px the slide is written at", default=0.25)
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scene")
    parser.add_argument("--tumour-foci", type=int, default=0, help="tumour foci on the slide")
    parser.add_argument(
        "--cohort", type=int, metavar="N", help="write a labelled cohort of N slides instead"
    )
    parser.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

    spec = SyntheticSlideSpec(
        width_px=args.width,
        height_px=args.height,
        mpp=args.slide_mpp,
        seed=args.seed,
        n_tumour_regions=args.tumour_foci,
    )
    if args.cohort is not None:
        from slideflow_core.synthetic.cohort import write_tumour_cohort

        cohort = write_tumour_cohort(
            args.out, args.cohort, spec=spec, seed=args.seed, progress=sys.stderr.isatty()
        )
        print(f"wrote {args.cohort} slides to {cohort.slides_dir}")
        print(f"manifest: {cohort.manifest} ({len(cohort.annotations())} with tumour)")
        return 0
    output_file(args.out, "slide")
    truth = write_synthetic_slide(args.out, spec, progress=sys.stderr.isatty())
    truth_path = Path(args.out).with_suffix(".truth.json")
    truth.save(truth_path)
    print(f"wrote {args.out} ({args.width} x {args.height} px at {args.slide_mpp} µm/px)")
    print(f"ground truth: {truth_path} ({len(truth.nuclei)} nuclei)")
    return 0
