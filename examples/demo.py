"""The end-to-end demo behind ``make demo``, on the embedded default (this machine).

It builds a cohort from synthetic H&E-like slides (written here, with ground
truth) plus the real sample slides shipped beside the repository
(``../shared/data/slides``, or ``--samples``), validates the manifest deeply
(every slide opened, calibration checked), prints each readable slide's
description and writes thumbnails. Then it works as a user at a shell would,
through the installed ``sfc`` command (each step a fresh process):

1. ``sfc run`` tiles every valid slide at 0.5 µm/px into per-slide Zarr stores and
   embeds the QC-kept tiles with the weight-free ``handcrafted`` embedder (a local
   Ray instance; the pipeline's ``tile`` and ``embed`` stages);
2. ``sfc mil train`` trains and evaluates ABMIL (3-fold, patient-grouped CV) telling
   tumour-bearing synthetic slides from tumour-free ones, and the demo checks that
   its attention lands on the tumour outlines; ``sfc mil report`` prints its metrics;
3. ``sfc run`` again with every stage: tiles and features are found complete and
   skipped, nuclei are segmented (``segment``), the trained run predicts every slide
   (``predict``: attention and a predictions table) and QuPath GeoJSON overlays with
   heatmaps are written (``export``).

Problems are reported with their fix and do not stop the rest.

    python examples/demo.py [--out demo-output] [--samples DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from mil.localisation import localise, regions_from_geojson
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.commands import format_info, write_png
from slideflow_core.errors import SlideflowError
from slideflow_core.synthetic import SyntheticSlideSpec
from slideflow_core.synthetic.cohort import TUMOUR_CLASS, TumourCohort, write_tumour_cohort
from tiling import open_store

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "slides"
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff"}

# Synthetic slides, half of them with tumour foci: the label the MIL model learns.
N_SYNTHETIC = 12
SYNTHETIC_SPEC = SyntheticSlideSpec(
    width_px=5120, height_px=5120, mpp=0.5, n_pen_marks=1, associated_images=False
)
RUN = "demo-abmil"
TARGET_MPP = 0.5  # µm/px of the tiles (20x)
PREDICTIONS = "abmil-all"  # the trained run applied to every slide (training keeps RUN's)


def sfc(*args: str | os.PathLike[str]) -> int:
    """Run one ``sfc`` command as a user would: a fresh process of the installed script."""
    script = Path(sys.executable).with_name("sfc")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "slideflow_core.cli"]
    print(f"\n$ sfc {' '.join(str(a) for a in args)}", flush=True)
    return subprocess.run([*command, *map(str, args)], check=False).returncode


def build_manifest(layout: ProjectLayout, samples: Path | None) -> tuple[Path, TumourCohort]:
    """Write the synthetic cohort and a manifest listing it and the shipped samples."""
    synthetic = write_tumour_cohort(
        layout.root / "synthetic", N_SYNTHETIC, spec=SYNTHETIC_SPEC, seed=1, progress=True
    )
    frame = pd.read_csv(synthetic.manifest, dtype={"slide_id": str}, keep_default_na=False)
    rows = frame[["slide_id", "path", "patient_id", "label"]].to_dict("records")
    if samples is not None and samples.is_dir():
        for path in sorted(samples.iterdir()):
            if path.suffix.lower() in SLIDE_SUFFIXES:
                rows.append({"slide_id": path.stem, "path": str(path), "patient_id": path.stem})
    manifest = layout.root / "slides.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, synthetic


def _kept_tiles(store: Path) -> int:
    """Tiles of a store that passed QC (0 when the slide was not tiled)."""
    try:
        return int(open_store(store).qc()["keep"].sum())
    except SlideflowError:
        return 0


def write_yaml(path: Path, data: dict) -> Path:
    """A config file, as a user would write it."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="slideflow-core end-to-end demo")
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="folder of sample slides")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    layout = ProjectLayout(args.out.resolve())
    layout.ensure()
    samples = args.samples if args.samples.is_dir() else None
    if samples is None:
        print(f"note: no sample slides at {args.samples}; using synthetic slides only")
    manifest, synthetic = build_manifest(layout, samples)

    print(f"== cohort: {manifest}")
    cohort = Cohort.from_manifest(manifest)
    report = cohort.validate(deep=True)
    print(report)
    bad = {p.slide_id for p in report.problems}

    print("\n== slides")
    thumbnails = []
    for record in cohort:
        if record.slide_id in bad:
            continue
        try:
            with cohort.open_slide(record.slide_id) as slide:
                print(format_info(slide.describe()))
                thumbnails.append(
                    write_png(slide.thumbnail(512), layout.thumbnail(record.slide_id))
                )
                slide.best_level_for(TARGET_MPP)  # can it be read at the tiling resolution?
        except SlideflowError as exc:  # one bad slide never stops the demo
            print(f"{record.slide_id}: {exc}")
            bad.add(record.slide_id)
        print()

    valid = layout.root / "valid.csv"
    cohort.subset([sid for sid in cohort.slide_ids if sid not in bad]).write(valid)
    pipeline = {
        "run_dir": str(layout.root),
        "stages": ["tile", "embed"],
        "tile": {"mpp": TARGET_MPP, "tile_px": 256},
        "embed": {"model": "handcrafted"},
    }
    print("\n== 1. tile and embed (sfc run: local Ray, 256 px at 0.5 µm/px, handcrafted features)")
    failed = bool(
        sfc("run", valid, "--config", write_yaml(layout.root / "pipeline.yaml", pipeline))
    )

    print("\n== 2. MIL (sfc mil train: ABMIL, 3-fold patient-grouped CV, tumour vs normal)")
    training = {
        "name": RUN,
        "data": {
            "manifest": str(synthetic.manifest),
            "project": str(layout.root),
            "features": "handcrafted",
            "label": "label",
        },
        "model": "abmil",
        "splits": {"method": "kfold", "k": 3, "seed": 0},
        "train": {"epochs": 30, "lr": 1e-3, "batch_size": 2, "patience": None,
                  "standardize": True},
        "heatmaps": 2,
    }  # fmt: skip
    trained = sfc("mil", "train", write_yaml(layout.root / "abmil.yaml", training), "--overwrite")
    failed |= bool(trained)
    if not trained:
        regions = regions_from_geojson(synthetic.annotations(), classes=[TUMOUR_CLASS])
        print(f"attention vs tumour outline: {localise(layout.root, RUN, regions)}")
        failed |= bool(sfc("mil", "report", layout.run(RUN)))

    print("\n== 3. every stage (sfc run: tile and embed resume, cells, predictions, overlays)")
    # A slide where no tile passed tissue detection and QC has nothing to predict from.
    tiled = Cohort.from_manifest(valid)
    empty = [s for s in tiled.slide_ids if not _kept_tiles(layout.store(s))]
    if empty:
        print(f"left out (no tile passed tissue detection and QC): {', '.join(empty)}")
    valid = layout.root / "with-tissue.csv"
    tiled.subset([s for s in tiled.slide_ids if s not in empty]).write(valid)
    pipeline["stages"] = ["tile", "embed", "segment", "predict", "export"]
    pipeline["segment"] = {"segmenter": "classical"}
    pipeline["predict"] = {"run": str(layout.run(RUN)), "name": PREDICTIONS}
    pipeline["export"] = {"run": PREDICTIONS}
    config = write_yaml(layout.root / "pipeline-all.yaml", pipeline)
    failed |= bool(sfc("run", valid, "--config", config))

    print("\n== outputs")
    print(f"manifest     {manifest}")
    print(
        f"slides       {synthetic.slides_dir} (synthetic, with *.truth.json ground truth "
        "and *.tumour.geojson outlines)"
    )
    print(f"thumbnails   {layout.thumbnails_dir} ({len(thumbnails)} PNG files)")
    print(f"tile stores  {layout.stores_dir} (one Zarr store per slide: tiles, features,")
    print("             cells, attention; each part verified: sfc verify <project>)")
    print(f"pipeline     {layout.root / 'pipeline'} (config.yaml, state.json, report.json)")
    print(f"status       {layout.status_dir}/<stage>/<slide_id>.json and <stage>.csv")
    print(f"MIL run      {layout.run(RUN)} (metrics.csv, predictions.csv, report.html)")
    print(f"predictions  {layout.root / 'predictions' / f'{PREDICTIONS}.csv'} (every slide)")
    print(f"overlays     {layout.exports} (drag a .geojson.gz onto the slide in QuPath)")
    print(f"viewer       sfc view {layout.root}   (deep zoom with tissue and tile layers)")
    print(f"{len(cohort)} slides, {len(bad)} with problems, in {time.perf_counter() - start:.1f}s")
    if failed:
        print("a step above failed: its error and hint are printed where it ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
