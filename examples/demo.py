"""The end-to-end demo behind ``make demo``, on the embedded default (this machine).

It builds a cohort from synthetic H&E-like slides (written here, with ground
truth) plus the real sample slides shipped beside the repository
(``../shared/data/slides``, or ``--samples``), validates the manifest deeply
(every slide opened, calibration checked), prints each readable slide's
description, writes thumbnails, tiles every valid slide at 0.5 µm/px into
per-slide Zarr stores on a local Ray instance, then embeds the QC-kept tiles with
the weight-free ``handcrafted`` embedder into ``features/handcrafted`` of each
store, segments nuclei on one synthetic slide with the classical segmenter, and
exports QuPath GeoJSON overlays (tissue, tiles with QC values, cells). Problems
are reported with their fix and do not stop the rest.

    python examples/demo.py [--out demo-output] [--samples DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from embedders import embed_cohort
from embedders.dense import segment_cohort
from slideflow_core.cohort import Cohort, ProjectLayout
from slideflow_core.commands import format_info, write_png
from slideflow_core.errors import SlideflowError
from slideflow_core.geojson import export_store, export_stores
from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide
from tiling import TilingConfig, open_cohort, tile_cohort

REPO = Path(__file__).resolve().parents[1]
CELLS_SLIDE = "synth-dense-1"
SAMPLES = REPO.parent / "shared" / "data" / "slides"
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff"}

# Two synthetic "patients" per class; the classes differ in nuclear density, a
# signal later stages (features, MIL) must learn.
SYNTHETIC = [
    ("synth-dense-1", "P01", "dense", 4200.0, 1),
    ("synth-dense-2", "P02", "dense", 4200.0, 2),
    ("synth-sparse-1", "P03", "sparse", 1200.0, 3),
    ("synth-sparse-2", "P04", "sparse", 1200.0, 4),
]


def build_manifest(layout: ProjectLayout, samples: Path | None) -> Path:
    """Write synthetic slides and a manifest listing them and the shipped samples."""
    slides_dir = layout.root / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for slide_id, patient, label, density, seed in SYNTHETIC:
        path = slides_dir / f"{slide_id}.svs"
        if not path.exists():
            spec = SyntheticSlideSpec(
                width_px=6144, height_px=4608, mpp=0.25, seed=seed, nuclei_per_mm2=density
            )
            truth = write_synthetic_slide(path.with_suffix(".partial.svs"), spec)
            truth.save(path.with_suffix(".truth.json"))
            path.with_suffix(".partial.svs").rename(path)  # complete files only
        rows.append(
            {"slide_id": slide_id, "path": str(path), "patient_id": patient, "label": label}
        )
    if samples is not None and samples.is_dir():
        for path in sorted(samples.iterdir()):
            if path.suffix.lower() in SLIDE_SUFFIXES:
                rows.append({"slide_id": path.stem, "path": str(path), "patient_id": path.stem})
    manifest = layout.root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


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
    manifest = build_manifest(layout, samples)

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

    print("\n== cells (classical nucleus segmenter, no weights, on one synthetic slide)")
    cells = segment_cohort(layout.root, "classical", cohort=[CELLS_SLIDE], progress=True)
    print(cells)

    print("\n== overlays (QuPath GeoJSON: tissue outlines, tiles with their QC values, cells)")
    overlays = export_stores(layout.root, layout.exports, what=("tissue", "tiles"))
    for summary in overlays:
        counts = ", ".join(f"{n} {layer}" for layer, n in summary.counts.items())
        print(f"{summary.slide_id}: {summary.error or counts}")
    cell_overlay = export_store(
        layout.store(CELLS_SLIDE), layout.exports / f"{CELLS_SLIDE}.cells.geojson", what=("cells",)
    )
    print(f"{CELLS_SLIDE}: {cell_overlay.counts.get('cells', 0)} cells -> {cell_overlay.path}")

    print("\n== outputs")
    print(f"manifest     {manifest}")
    print(f"slides       {layout.root / 'slides'} (synthetic, with *.truth.json ground truth)")
    print(f"thumbnails   {layout.root / 'thumbnails'} ({len(thumbnails)} PNG files)")
    print(f"tile stores  {layout.stores_dir} (one Zarr store per slide)")
    print(f"summary      {layout.root / 'tiling_summary.csv'}; status in {layout.status_dir}")
    print(
        f"features     {embedding.part} in each tile store "
        f"(slideflow_core.features.read_features(store, 'handcrafted')); "
        f"report {layout.status_dir / 'embed-handcrafted.json'}"
    )
    print(f"overlays     {layout.exports} (drag a .geojson onto the slide in QuPath)")
    print(f"viewer       sfc view {layout.root}   (deep zoom with tissue and tile layers)")
    print(f"{len(cohort)} slides, {len(bad)} with problems, in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
