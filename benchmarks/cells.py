"""Cells: accuracy on real annotated tiles, and whole-slide throughput and memory.

Accuracy, per segmenter, on the shipped MoNuSeg / CPM-15 tiles (``--data``), split into
the half the classical defaults were tuned on and the held-out half
(``embedders.dense.tuning_split``): Dice, AJI, PQ (with DQ, SQ) and detection F1 (3 µm),
averaged per tile, printed next to HoVer-Net's published numbers (Kumar; CoNSeP).

- ``classical``: ours, no weights;
- ``hovernet-head``: ours, a dense decoder on a frozen ViT trained briefly on CPU on
  the tuning half only (``--backbone``, random init by default: no weights may be
  downloaded here, so its tokens carry no pathology knowledge; say so when reading it);
- ``histomicstk``: HistomicsTK's documented nuclei pipeline (deconvolution, foreground
  threshold, LoG, max-clustering, area opening), when ``--htk-python`` names an
  interpreter that has it.

Throughput: one synthetic slide (``--size``, 50k x 50k by default; ``--quick`` 12k)
segmented at 0.5 µm/px, each measurement in its own subprocess so peak RSS is its own:
the read floor (the windows decoded and resized, nothing else), ours (``segment_slide``:
bands, stitching, streamed table) and a naive loop (one ``read_region`` per window, every
cell kept in Python lists and written at the end).

    python benchmarks/cells.py --data ../shared/data/nuclei [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import peak_rss_mb, print_table, write_json

# benchmarks/embedders.py would shadow the package: take this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PUBLISHED = [
    {"segmenter": "HoVer-Net (published, Kumar)", "dice": 0.826, "aji": 0.641, "pq": 0.597},
    {"segmenter": "HoVer-Net (published, CoNSeP)", "dice": 0.853, "aji": 0.600, "pq": 0.548},
]
METRICS = ("dice", "aji", "pq", "dq", "sq", "f1")
DETECTION_UM = 3.0

_HTK_SCRIPT = r"""
import json, sys
import numpy as np, scipy as sp
from PIL import Image
import histomicstk as htk
folder, ids = sys.argv[1], json.loads(sys.argv[2])
manifest = {t["id"]: t for t in json.load(open(f"{folder}/manifest.json"))["tiles"]}
W = htk.preprocessing.color_deconvolution.stain_color_map
stains = np.array([W["hematoxylin"], W["eosin"], W["null"]]).T
for tile_id in ids:
    rgb = np.asarray(Image.open(f"{folder}/{tile_id}.png").convert("RGB"))
    k = 0.25 / manifest[tile_id]["mpp"]  # the documented settings are for 40x
    nuclei = htk.preprocessing.color_deconvolution.color_deconvolution(rgb, stains).Stains[:, :, 0]
    fg = sp.ndimage.binary_fill_holes(nuclei < 60)
    log, _ = htk.filters.shape.cdog(nuclei, fg, sigma_min=10 * k * np.sqrt(2),
                                     sigma_max=15 * k * np.sqrt(2))
    mask, _, _ = htk.segmentation.nuclear.max_clustering(log, fg, max(1, int(10 * k)))
    mask = htk.segmentation.label.area_open(mask, 80 * k * k).astype(np.int32)
    np.save(f"{sys.argv[3]}/{tile_id}.npy", mask)
"""


def _scores(tiles: list[Any], predict: Any) -> dict[str, float]:
    from embedders.dense import score_tile

    rows = []
    for tile in tiles:
        labels = predict(tile)
        rows.append(score_tile(tile.instances, labels, max_distance_px=DETECTION_UM / tile.mpp))
    return {m: float(np.mean([getattr(r, m) for r in rows])) for m in METRICS}


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-segmenter mean scores on the tuning and held-out halves."""
    from embedders.dense import (
        ClassicalSegmenter,
        DenseTrainConfig,
        read_annotated_folder,
        train_dense_head,
        tuning_split,
    )

    tiles = {t.id: t for t in read_annotated_folder(args.data)}
    tuning, held_out = tuning_split(sorted(tiles))
    halves = {"tuning": [tiles[i] for i in tuning], "held-out": [tiles[i] for i in held_out]}
    rows = []

    def add(name: str, predict: Any, note: str, seconds: float | None = None) -> None:
        for half, chosen in halves.items():
            started = time.perf_counter()
            scores = _scores(chosen, predict)
            rows.append(
                {
                    "segmenter": name,
                    "half": half,
                    **scores,
                    "s/tile": (time.perf_counter() - started) / len(chosen),
                    "note": note,
                }
            )

    add(
        "classical",
        lambda t: ClassicalSegmenter(mpp=t.mpp).segment(t.image).labels,
        "defaults tuned on the tuning half",
    )
    steps = 40 if args.quick else args.steps
    started = time.perf_counter()
    head, history = train_dense_head(
        halves["tuning"],
        config=DenseTrainConfig(steps=steps, batch_size=4, lr=2e-3, progress=False),
        backbone=args.backbone,
        backbone_weights="random",
        mpp=0.25,
    )
    trained = time.perf_counter() - started
    print(
        f"hovernet-head: {steps} steps on {args.backbone} (random init, frozen) in "
        f"{trained:.0f}s; loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}"
    )

    def learned(tile: Any) -> np.ndarray:
        import cv2

        from embedders.dense.morphology import drop_small

        factor = tile.mpp / head.mpp
        size = (round(tile.image.shape[1] * factor), round(tile.image.shape[0] * factor))
        image = cv2.resize(tile.image, size) if factor != 1 else tile.image
        labels = head.segment(image).labels
        if factor != 1:  # back to the annotation's pixels
            labels = cv2.resize(labels, tile.image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        return drop_small(labels, 1)

    add(
        "hovernet-head",
        learned,
        f"{steps} CPU steps, {args.backbone} random-init frozen, {trained:.0f}s",
    )
    if args.htk_python:
        rows += _htk_rows(args, halves)
    return rows


def _htk_rows(args: argparse.Namespace, halves: dict[str, list[Any]]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for half, chosen in halves.items():
            started = time.perf_counter()
            ids = [t.id for t in chosen]
            done = subprocess.run(
                [args.htk_python, "-c", _HTK_SCRIPT, str(args.data), json.dumps(ids), out],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                print(f"histomicstk failed: {done.stderr.strip().splitlines()[-1:]}")
                return []
            seconds = (time.perf_counter() - started) / len(chosen)
            scores = _scores(chosen, lambda t: np.load(f"{out}/{t.id}.npy"))
            rows.append(
                {
                    "segmenter": "histomicstk",
                    "half": half,
                    **scores,
                    "s/tile": seconds,
                    "note": "documented example settings, scaled by µm/px",
                }
            )
    return rows


# -- throughput --------------------------------------------------------------------------
def _worker(kind: str, slide: str, out: str) -> dict[str, Any]:
    """One throughput measurement in this process (run through a subprocess)."""
    from embedders.dense import ClassicalSegmenter, SegmentConfig, segment_slide
    from embedders.dense.plan import plan_cells

    segmenter = ClassicalSegmenter(mpp=0.5)
    config = SegmentConfig()
    started = time.perf_counter()
    if kind == "ours":
        result = segment_slide(slide, segmenter, config=config, out=out, overwrite=True)
        return {
            "cells": result.details["n_cells"],
            "tiles": result.n_tiles,
            "seconds": time.perf_counter() - started,
            "rss_mb": peak_rss_mb(),
        }
    plan = plan_cells(slide, segmenter, config, out=out)
    if kind == "floor":
        from tiling.reader import TileReader

        with plan.open() as opened:
            reader = TileReader(
                opened, level=plan.level, read_px=plan.read_px, tile_px=config.window_px, threads=2
            )
            origins = np.round((plan.cores * plan.step0) - config.overlap_px * plan.scale)
            n = sum(len(i) for i, _ in reader.read(origins.astype(np.int64)))
        return {
            "cells": 0,
            "tiles": n,
            "seconds": time.perf_counter() - started,
            "rss_mb": peak_rss_mb(),
        }
    return _naive(plan, segmenter, out, started)


def _naive(plan: Any, segmenter: Any, out: str, started: float) -> dict[str, Any]:
    """One ``read_region`` per window, every cell kept in lists, one write at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    from embedders.dense.bands import _window_frames
    from embedders.dense.measure import measure_window
    from embedders.dense.stitch import resolve_overlaps

    polygons, xs, ys, cores = [], [], [], []
    with plan.open() as slide:
        origins, frames = _window_frames(plan, plan.cores, slide.level_downsamples[plan.level])
        side = plan.config.window_px
        for (x, y), frame in zip(origins.tolist(), frames, strict=True):
            window = slide.read_at((x, y), mpp=plan.mpp, tile_px=side)
            cells = measure_window(segmenter.segment(window), window, frame)
            polygons += list(cells.polygons)
            xs += cells.columns["x"].tolist()
            ys += cells.columns["y"].tolist()
            cores += cells.in_core.tolist()
    keep = resolve_overlaps(np.array(polygons, dtype=object), np.array(cores))
    table = pa.table(
        {
            "geometry": shapely.to_wkb(np.array(polygons, dtype=object)[keep]),
            "x": np.array(xs)[keep],
            "y": np.array(ys)[keep],
        }
    )
    pq.write_table(table, out)
    return {
        "cells": int(keep.sum()),
        "tiles": len(plan.cores),
        "seconds": time.perf_counter() - started,
        "rss_mb": peak_rss_mb(),
    }


def throughput(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Floor, ours and naive on one synthetic slide, each in a fresh process."""
    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

    side = 12_000 if args.quick else args.size
    slide = folder / f"synthetic-{side}.svs"
    started = time.perf_counter()
    truth = write_synthetic_slide(slide, SyntheticSlideSpec(width_px=side, height_px=side, seed=5))
    print(
        f"synthetic {side}x{side} slide with {truth.n_nuclei} nuclei written in "
        f"{time.perf_counter() - started:.0f}s"
    )
    rows = []
    kinds = ["floor", "ours", "naive"] if (args.quick or args.naive) else ["floor", "ours"]
    for kind in kinds:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                kind,
                str(slide),
                str(folder / f"{kind}.parquet"),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"{kind} failed:\n{done.stderr[-2000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "method": {
                    "floor": "floor: read windows only",
                    "ours": "ours: segment_slide",
                    "naive": "naive: read_region loop, cells in RAM",
                }[kind],
                "slide": f"{side}x{side}",
                "tiles": record["tiles"],
                "cells": record["cells"],
                "seconds": record["seconds"],
                "cells/s": record["cells"] / record["seconds"] if record["cells"] else 0.0,
                "tiles/s": record["tiles"] / record["seconds"],
                "peak RSS MB": record["rss_mb"],
                "truth nuclei": truth.n_nuclei,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei"
    parser.add_argument("--data", type=Path, default=default, help="folder of ID.png + ID.inst.png")
    parser.add_argument("--quick", action="store_true", help="12k slide, 40 training steps")
    parser.add_argument("--size", type=int, default=50_000, help="synthetic slide side, px")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the head")
    parser.add_argument("--backbone", default="dinov2_vits14", help="ViT of the learned head")
    parser.add_argument("--htk-python", help="python with histomicstk installed (a peer)")
    parser.add_argument("--naive", action="store_true", help="also run the naive loop (full)")
    parser.add_argument("--skip-slide", action="store_true", help="accuracy only")
    parser.add_argument("--skip-accuracy", action="store_true", help="throughput only")
    parser.add_argument(
        "--worker", nargs=3, metavar=("KIND", "SLIDE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return
    rows = [] if args.skip_accuracy else accuracy(args)
    if rows:
        print_table(rows + PUBLISHED, ["segmenter", "half", *METRICS, "s/tile", "note"])
    speed: list[dict[str, Any]] = []
    if not args.skip_slide:
        with tempfile.TemporaryDirectory() as folder:
            speed = throughput(args, Path(folder))
        print()
        print_table(
            speed,
            [
                "method",
                "slide",
                "tiles",
                "cells",
                "seconds",
                "cells/s",
                "tiles/s",
                "peak RSS MB",
                "truth nuclei",
            ],
        )
    path = write_json(
        "cells",
        {
            "accuracy": rows,
            "published": PUBLISHED,
            "throughput": speed,
            "detection_um": DETECTION_UM,
            "quick": args.quick,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
