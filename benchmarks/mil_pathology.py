"""MIL on whole slides, end to end: slide-level AUROC and attention localisation.

    python benchmarks/mil_pathology.py [--slides 40] [--heads mean,abmil] [--work DIR]
    python benchmarks/mil_pathology.py --data COHORT_DIR   # your own labelled slides

Without ``--data``, writes a synthetic cohort (``--slides`` slides of
``--size``² px at 0.5 µm/px; about half carry one to three tumour foci of denser,
larger, more elongated nuclei, the rest none). Then, on the embedded default
(local Ray, local Zarr): tiles every slide (256 px at 0.5 µm/px), embeds the
QC-kept tiles with the weight-free ``handcrafted`` embedder, and trains each head
with patient-grouped, stratified 5-fold CV (15 % of each training fold held out
for early stopping). Reports per head the pooled slide AUROC with its bootstrap
95 % CI and balanced accuracy, and, against the tumour outlines, the tile-level
AUROC of the attention (per positive slide, averaged) and how often the top tile
is tumour.

``--data DIR`` takes any folder holding ``manifest.csv`` with ``slide_id, path,
patient_id, label`` and optionally ``annotation`` (a QuPath GeoJSON of the lesion,
class ``--lesion-class``, for the slides that have one); localisation is scored
on the annotated slides.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import peak_rss_mb, print_table, write_json
from embedders import embed_cohort
from mil import Experiment, KFold, TrainConfig
from mil.localisation import localise, regions_from_geojson
from slideflow_core.cohort import Cohort
from slideflow_core.features import feature_info
from slideflow_core.synthetic import SyntheticSlideSpec
from slideflow_core.synthetic.cohort import (
    TUMOUR_CLASS,
    manifest_annotations,
    write_tumour_cohort,
)
from tiling import TilingConfig, tile_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder with manifest.csv (default: synthetic)")
    parser.add_argument("--work", type=Path, help="project folder (default: a temporary one)")
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--size", type=int, default=8192, help="synthetic slide side in px")
    parser.add_argument("--heads", default="mean,abmil,gated_abmil")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lesion-class", default=TUMOUR_CLASS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sfc-mil-pathology-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run(args, work)
    print(f"\nwrote {write_json('mil_pathology', results, args.out)}")


def run(args: argparse.Namespace, work: Path) -> dict:
    """Every stage in turn; returns the JSON payload."""
    stages: dict[str, float] = {}
    start = time.perf_counter()
    if args.data is None:
        spec = SyntheticSlideSpec(
            width_px=args.size, height_px=args.size, mpp=0.5, n_pen_marks=0,
            associated_images=False,
        )  # fmt: skip
        cohort_files = write_tumour_cohort(
            work / "cohort", args.slides, spec=spec, seed=args.seed, progress=True
        )
        manifest = cohort_files.manifest
    else:
        manifest = args.data / "manifest.csv"
    stages["synthesise"] = time.perf_counter() - start
    cohort = Cohort.from_manifest(manifest)
    project = work / "project"

    start = time.perf_counter()
    tiling = tile_cohort(cohort, project, TilingConfig(mpp=0.5, tile_px=256), progress=True)
    stages["tile"] = time.perf_counter() - start
    print(tiling)
    start = time.perf_counter()
    embedding = embed_cohort(project, "handcrafted", progress=True)
    stages["embed"] = time.perf_counter() - start
    print(embedding)

    regions = regions_from_geojson(manifest_annotations(manifest), classes=[args.lesion_class])
    rows, details = [], {}
    for head in args.heads.split(","):
        start = time.perf_counter()
        experiment = Experiment(
            cohort, project=project, features="handcrafted", label="label", model=head,
            splits=KFold(k=args.folds, val_fraction=0.15, seed=args.seed),
            train=TrainConfig(epochs=args.epochs, lr=2e-4, batch_size=4, patience=10,
                              standardize=True, seed=args.seed),
            name=f"bench-{head}", heatmaps=2, overwrite=True,
        )  # fmt: skip
        results = experiment.run()
        seconds = time.perf_counter() - start
        pooled = results.pooled
        where = localise(project, experiment.name, regions) if regions else None
        rows.append({
            "head": head,
            "slide AUROC [95% CI]": f"{pooled['auroc']:.3f} [{pooled['auroc_ci_low']:.3f}, "
            f"{pooled['auroc_ci_high']:.3f}]",
            "balanced acc": pooled["balanced_accuracy"],
            "tile AUROC (attention)": where.mean_auroc if where else "no annotations",
            "top tile in lesion": where.top_hit_rate if where else "",
            "train+test s": seconds,
        })  # fmt: skip
        details[head] = {
            "pooled": {k: v for k, v in pooled.items() if k != "confusion"},
            "run_dir": str(results.run_dir),
            "localisation": where.per_slide.to_dict("records") if where else None,
            "seconds": seconds,
        }
    n_bags = [
        feature_info(project / "stores" / f"{i}.zarr", "handcrafted")["n"] for i in cohort.slide_ids
    ]
    print(f"\n{len(cohort)} slides, {sum(n_bags)} embedded tiles ({manifest}); stages: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))  # fmt: skip
    print(f"Slide classification ({args.folds}-fold CV, pooled test predictions) and localisation")
    print_table(rows, list(rows[0]))
    return {
        "slides": len(cohort), "manifest": str(manifest), "embedded_tiles": sum(n_bags),
        "stages_s": stages, "rows": rows, "heads": details, "peak_rss_mb": peak_rss_mb(),
    }  # fmt: skip


if __name__ == "__main__":
    main()
