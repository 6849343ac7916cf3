"""MIL on pathology slides: heads told apart by slide AUROC, F1 and attention localisation.

    python benchmarks/mil_pathology.py [--seeds 5] [--heads mean,abmil,...]   # sweep
    python benchmarks/mil_pathology.py --mode slides [--slides 40] [--work DIR]
    python benchmarks/mil_pathology.py --mode slides --data COHORT_DIR   # your own slides

``--mode features`` (default): the seeds sweep on slides built from real
embedded tiles (``benchmarks/mil_tile_pools.py``: tissue rendered by the
synthetic slide writer, ``handcrafted`` features; tumour on 0.5–3 % of a
positive slide's tiles, close in texture to normal; inflammation-like
look-alikes on half the slides of both classes; a second site for the OOD test
set). Every seed draws a new balanced training set and ID/OOD test sets; each
head is trained once per seed. Reports per head the mean over seeds, with a
95 % bootstrap interval, of slide AUROC, balanced accuracy and macro-F1 (ID and
OOD) and of the attention's localisation (per positive slide, the AUROC of its
instance scores against the tumour truth, and how often the top one is tumour).
Tiling and embedding whole cohorts per seed would take hours on two cores; the
real slides→features path is ``--mode slides``.

``--mode slides``: without ``--data``, writes a synthetic cohort (``--slides`` slides of
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import peak_rss_mb, print_table, write_json
from benchmarks.mil_tile_pools import (
    Method,
    as_table,
    draw_bags,
    fit_and_score,
    load_or_build_pools,
    mean_ci,
)
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

SWEEP_HEADS = "mean,abmil,gated_abmil,clam_sb,dsmil,scmil"
HEAD_OPTIONS = {"transmil": {"hidden_dim": 128, "landmarks": 64}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("features", "slides"), default="features")
    parser.add_argument("--data", type=Path, help="folder with manifest.csv (slides mode)")
    parser.add_argument("--work", type=Path, help="project folder / tile-pool cache")
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--size", type=int, default=8192, help="synthetic slide side in px")
    parser.add_argument("--heads", default=None, help=f"default: {SWEEP_HEADS} (features)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="default 20 (features), 40")
    parser.add_argument("--lesion-class", default=TUMOUR_CLASS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=5, help="features mode")
    parser.add_argument("--train", type=int, default=120, help="training slides per seed")
    parser.add_argument("--test", type=int, default=80, help="slides per test set")
    parser.add_argument("--tumour-strength", type=float, default=0.6)
    parser.add_argument("--pool-slides", type=int, default=6)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()
    if args.mode == "features":
        args.heads = args.heads or SWEEP_HEADS
        args.epochs = args.epochs or 20
        work = args.work or Path("benchmarks/results/mil_work")
        results = sweep(args, work)
    else:
        args.heads = args.heads or "mean,abmil,gated_abmil"
        args.epochs = args.epochs or 40
        with tempfile.TemporaryDirectory(prefix="sfc-mil-pathology-") as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            results = run(args, work)
    print(f"\nwrote {write_json('mil_pathology', results, args.out)}")


def sweep(args: argparse.Namespace, work: Path) -> dict:
    """Every head on ``--seeds`` draws of simulated slides; the JSON payload."""
    torch.set_num_threads(1)  # small models: threads only add synchronisation
    pools = load_or_build_pools(work / "tile_pools.npz", slides=args.pool_slides)
    draw = {"tumour_strength": args.tumour_strength}
    runs = []
    for seed in range(args.seeds):
        train = draw_bags(pools, args.train, positive_fraction=0.5, seed=seed, **draw)
        tests = {
            "ID": draw_bags(pools, args.test, positive_fraction=0.5, seed=seed + 1000, **draw),
            "OOD": draw_bags(
                pools, args.test, positive_fraction=0.5, site=2, seed=seed + 2000, **draw
            ),
        }
        tables = {k: (as_table(v), v.lesion) for k, v in tests.items()}
        for head in args.heads.split(","):
            method = Method(name=head, head=head, head_kwargs=HEAD_OPTIONS.get(head, {}))
            start = time.perf_counter()
            scores = fit_and_score(method, as_table(train), tables, epochs=args.epochs, seed=seed)
            runs.append({"head": head, "seed": seed, "scores": scores,
                         "s": time.perf_counter() - start})  # fmt: skip
            print(seed, head, scores, flush=True)
    rows = []
    for head in args.heads.split(","):
        mine = [r for r in runs if r["head"] == head]
        row: dict = {"head": head}
        for split, metrics in (
            ("ID", ("auroc", "balanced_accuracy", "macro_f1", "attention_auroc", "top_hit")),
            ("OOD", ("auroc", "balanced_accuracy", "macro_f1")),
        ):
            for metric in metrics:
                mean, low, high = mean_ci([r["scores"][split][metric] for r in mine])
                row[f"{split} {metric}"] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
        row["s/seed"] = float(np.mean([r["s"] for r in mine]))
        rows.append(row)
    print(f"\nSimulated slides from real embedded tiles, {args.seeds} seeds, {args.train} "
          f"training / {args.test}+{args.test} test slides; mean [95% bootstrap CI]")  # fmt: skip
    print_table(rows, list(rows[0]))
    return {"mode": "features", "seeds": args.seeds, "pools": pools.summary(),
            "tumour_strength": args.tumour_strength, "rows": rows, "runs": runs}  # fmt: skip


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
