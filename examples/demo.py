"""The end-to-end demo behind ``make demo``, on the embedded default (this machine).

It builds a cohort from synthetic H&E-like slides (written here, with ground
truth) plus the real sample slides shipped beside the repository
(``../shared/data/slides``, or ``--samples``), validates the manifest deeply
(every slide opened, calibration checked), prints each readable slide's
description, writes thumbnails, tiles every valid slide at 0.5 µm/px into
per-slide Zarr stores on a local Ray instance, then embeds the QC-kept tiles with
the weight-free ``handcrafted`` embedder into ``features/handcrafted`` of each
store, trains and evaluates an ABMIL model (3-fold, patient-grouped CV) that
tells tumour-bearing synthetic slides from tumour-free ones and checks that its
attention lands on the tumour, segments nuclei on one tumour slide with the
classical segmenter, and exports QuPath GeoJSON overlays (tissue, tiles with QC
values and attention, cells). Problems are reported with their fix and do not
stop the rest.

    python examples/demo.py [--out demo-output] [--samples DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

import mil
from embedders import embed_cohort
from embedders.dense import segment_cohort
from mil.localisation import localise, regions_from_geojson
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.commands import format_info, write_png
from slideflow_core.errors import SlideflowError
from slideflow_core.geojson import export_store, export_stores
from slideflow_core.synthetic import SyntheticSlideSpec
from slideflow_core.synthetic.cohort import TUMOUR_CLASS, TumourCohort, write_tumour_cohort
from tiling import TilingConfig, open_cohort, tile_cohort

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "slides"
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff"}

# Synthetic slides, half of them with tumour foci: the label the MIL model learns.
N_SYNTHETIC = 12
SYNTHETIC_SPEC = SyntheticSlideSpec(
    width_px=5120, height_px=5120, mpp=0.5, n_pen_marks=1, associated_images=False
)
RUN = "demo-abmil"


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
    manifest = layout.root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest, synthetic


def train_mil(cohort: Cohort, layout: ProjectLayout, synthetic: TumourCohort) -> None:
    """ABMIL on the labelled (synthetic) slides; print metrics and attention localisation."""
    experiment = mil.Experiment(
        cohort, project=layout.root, features="handcrafted", label="label", model="abmil",
        splits=mil.KFold(k=3, seed=0),
        train=mil.TrainConfig(epochs=30, lr=1e-3, batch_size=2, patience=None, standardize=True),
        name=RUN, heatmaps=2,
    )  # fmt: skip
    results = experiment.run()
    columns = ["fold", "n", "auroc", "balanced_accuracy", "f1"]
    print(results.metrics[columns].round(3).to_string(index=False))
    regions = regions_from_geojson(synthetic.annotations(), classes=[TUMOUR_CLASS])
    where = localise(layout.root, RUN, regions)
    print(f"attention vs tumour outline: {where}")
    print(f"run folder: {results.run_dir} (report.html, roc.png, heatmaps/)")


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
        except SlideflowError as exc:  # one bad slide never stops the demo
            print(f"{record.slide_id}: {exc}")
        print()

    print("== tiling (local Ray, 256 px at 0.5 µm/px)")
    valid = cohort.subset([sid for sid in cohort.slide_ids if sid not in bad])
    tiling = tile_cohort(valid, layout.root, TilingConfig(mpp=0.5, tile_px=256), progress=True)
    print(tiling)
    tiles = open_cohort(layout.root)
    print(f"dask view: {tiles.tiles.shape} tiles, {int(tiles.table['keep'].sum())} pass QC")

    print("\n== embedding (local Ray, handcrafted features of the QC-kept tiles)")
    embedding = embed_cohort(layout.root, "handcrafted", progress=True)
    print(embedding)

    print("\n== MIL (ABMIL, 3-fold patient-grouped CV: tumour vs normal synthetic slides)")
    train_mil(cohort, layout, synthetic)

    cells_slide = next(iter(synthetic.annotations()))
    print(f"\n== cells (classical nucleus segmenter, no weights, on tumour slide {cells_slide})")
    cells = segment_cohort(layout.root, "classical", cohort=[cells_slide], progress=True)
    print(cells)

    print("\n== overlays (QuPath GeoJSON: tissue outlines, tiles with their QC values, cells)")
    overlays = export_stores(layout.root, layout.exports, what=("tissue", "tiles"))
    for summary in overlays:
        counts = ", ".join(f"{n} {layer}" for layer, n in summary.counts.items())
        print(f"{summary.slide_id}: {summary.error or counts}")
    attention = export_stores(layout.run(RUN), layout.exports / RUN, what=("tiles",))
    print(f"{RUN}: tiles with attention for {len(attention)} slides -> {layout.exports / RUN}")
    cell_overlay = export_store(
        layout.store(cells_slide), layout.exports / f"{cells_slide}.cells.geojson", what=("cells",)
    )
    print(f"{cells_slide}: {cell_overlay.counts.get('cells', 0)} cells -> {cell_overlay.path}")

    print("\n== outputs")
    print(f"manifest     {manifest}")
    print(
        f"slides       {synthetic.slides_dir} (synthetic, with *.truth.json ground truth "
        "and *.tumour.geojson outlines)"
    )
    print(f"thumbnails   {layout.root / 'thumbnails'} ({len(thumbnails)} PNG files)")
    print(f"tile stores  {layout.stores_dir} (one Zarr store per slide)")
    print(f"summary      {layout.root / 'tiling_summary.csv'}; status in {layout.status_dir}")
    print(
        f"features     {embedding.part} in each tile store "
        f"(slideflow_core.features.read_features(store, 'handcrafted')); "
        f"report {layout.status_dir / 'embed-handcrafted.json'}"
    )
    print(f"MIL run      {layout.run(RUN)} (metrics.csv, predictions.csv, report.html)")
    print(f"overlays     {layout.exports} (drag a .geojson onto the slide in QuPath)")
    print(f"viewer       sfc view {layout.root}   (deep zoom with tissue and tile layers)")
    print(f"{len(cohort)} slides, {len(bad)} with problems, in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
