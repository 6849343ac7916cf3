"""Cells: accuracy on any annotated folder, and whole-slide throughput and memory.

Accuracy, per segmenter, on every evaluated tile of ``--data`` (a folder of ``ID.png`` +
``ID.inst.png`` pairs, any names, µm/px from a ``manifest.json`` beside them or 0.25;
or PanNuke ``images.npy`` + ``masks.npy``): Dice, AJI, PQ (DQ, SQ), detection F1,
precision and recall (3 µm), false detections per mm² of the annotation's non-nuclear
area, seconds per tile and per megapixel (wall clock, and CPU: what a 1000² tile costs
an idle core) and training time, averaged per tile, next to HoVer-Net's published
numbers (Kumar; CoNSeP).

- ``otsu``: naive baseline, Otsu threshold of the haematoxylin and connected components;
- ``classical``: ours, no weights (its defaults were tuned on fold 1 of 2 of the shipped
  tiles, ``tuning_split``: on them, evaluate ``--eval-folds 2``);
- ``learned``: ours, the U-Net trained end to end (``train_segmenter``): on ``--train``
  when it is another folder; when ``--data`` is the training folder (the default),
  k-fold by tile (``--folds``; ``tile_folds``: sources, then tiles, dealt in turn), each
  evaluated fold scored by a model trained on the others; or ``--learned-weights W``
  (from ``sfc cells train``), scored only on tiles its card says it never saw;
- ``histomicstk``: HistomicsTK's documented nuclei pipeline, when ``--htk-python``
  names an interpreter that has it (a peer).

Throughput: one synthetic slide (``--size``, 50k x 50k by default; ``--quick`` 12k)
segmented at 0.5 µm/px, each measurement in its own subprocess so peak RSS is its own:
the read floor (the windows decoded and resized, nothing else), ours (``segment_slide``:
bands, stitching, streamed table) and a naive loop (one ``read_region`` per window, every
cell kept in Python lists and written at the end).

    python benchmarks/cells.py --data ../shared/data/nuclei --eval-folds 2 --skip-slide
    python benchmarks/cells.py --eval-folds 2 --skip-slide --segmenters classical
    python benchmarks/cells.py --data MONUSEG_FOLDER --out monuseg.json
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
METRICS = ("dice", "aji", "pq", "dq", "sq", "f1", "precision", "recall", "false_per_mm2")
COLUMNS = ("segmenter", "tiles", *METRICS, "s/tile", "s/Mpx", "cpu s/Mpx", "train s", "note")
DETECTION_UM = 3.0
SEGMENTERS = ("otsu", "classical", "learned", "histomicstk")

_HTK_SCRIPT = r"""
import json, sys
import numpy as np, scipy as sp
from PIL import Image
import histomicstk as htk
folder, mpps = sys.argv[1], json.loads(sys.argv[2])
W = htk.preprocessing.color_deconvolution.stain_color_map
stains = np.array([W["hematoxylin"], W["eosin"], W["null"]]).T
for tile_id, mpp in mpps.items():
    rgb = np.asarray(Image.open(f"{folder}/{tile_id}.png").convert("RGB"))
    k = 0.25 / mpp  # the documented settings are for 40x
    nuclei = htk.preprocessing.color_deconvolution.color_deconvolution(rgb, stains).Stains[:, :, 0]
    fg = sp.ndimage.binary_fill_holes(nuclei < 60)
    log, _ = htk.filters.shape.cdog(nuclei, fg, sigma_min=10 * k * np.sqrt(2),
                                     sigma_max=15 * k * np.sqrt(2))
    mask, _, _ = htk.segmentation.nuclear.max_clustering(log, fg, max(1, int(10 * k)))
    mask = htk.segmentation.label.area_open(mask, 80 * k * k).astype(np.int32)
    np.save(f"{sys.argv[3]}/{tile_id}.npy", mask)
"""


def _row(
    name: str,
    tiles: list[Any],
    labels: dict[str, np.ndarray],
    seconds: tuple[float, float],
    note: str,
    train_seconds: float | None = None,
) -> dict[str, Any]:
    """Mean scores of one segmenter's instance maps over ``tiles``.

    ``seconds``: wall-clock and CPU (all threads of this process) time segmenting took;
    per megapixel of tile, the CPU time is what a 1000² tile costs on an idle core.
    """
    from embedders.dense import score_tile

    scores = [
        score_tile(t.instances, labels[t.id], max_distance_px=DETECTION_UM / t.mpp, mpp=t.mpp)
        for t in tiles
    ]
    megapixels = sum(t.instances.size for t in tiles) / 1e6
    return {
        "segmenter": name,
        "tiles": len(tiles),
        **{m: float(np.mean([getattr(s, m) for s in scores])) for m in METRICS},
        "s/tile": seconds[0] / len(tiles),
        "s/Mpx": seconds[0] / megapixels,
        "cpu s/Mpx": seconds[1] / megapixels,
        "train s": train_seconds,
        "note": note,
    }


def _run(segment: Any, tiles: list[Any]) -> tuple[dict[str, np.ndarray], tuple[float, float]]:
    """Instance maps of ``tiles`` at their own µm/px; wall and CPU seconds segmenting took."""
    from embedders.dense.fit import segment_at

    started, cpu = time.perf_counter(), time.process_time()
    labels = {t.id: segment_at(segment(t), t) for t in tiles}
    return labels, (time.perf_counter() - started, time.process_time() - cpu)


def _otsu(mpp: float) -> Any:
    """The naive baseline: Otsu threshold of the haematoxylin, connected components."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from embedders.dense import TileSegmentation
    from embedders.dense.deconvolution import stain_concentrations
    from embedders.dense.morphology import drop_small

    class Otsu:
        def __init__(self) -> None:
            self.mpp = mpp

        def segment(self, image: np.ndarray) -> Any:
            h, _ = stain_concentrations(image)
            labels = ndimage.label(h > threshold_otsu(h))[0].astype(np.int32)
            return TileSegmentation(drop_small(labels, 8.0 / mpp**2))

    return Otsu()


def _learned_plan(
    args: argparse.Namespace, tiles: dict[str, Any]
) -> list[tuple[list[Any], list[str], str]]:
    """(training tiles, ids to score, how) per learned model of this run."""
    from embedders.dense import read_training_data, tile_folds

    same = args.train is None or args.train.resolve() == args.data.resolve()
    if not same:
        train = read_training_data(args.train)
        how = f"trained on {args.train} ({len(train)} tiles)"
        shared = sorted({t.id for t in train} & set(tiles))
        if shared:  # same ids: most likely the same tiles, so not held out
            how += f"; {len(shared)} ids also in --data: not held out"
            print(f"warning: {len(shared)} tile ids are in both --train and --data")
        return [(train, sorted(tiles), how)]
    folds = tile_folds(sorted(tiles), args.folds)
    chosen = args.eval_folds or list(range(1, args.folds + 1))
    plan = []
    for number in chosen:
        others = [tiles[i] for k, fold in enumerate(folds) if k != number - 1 for i in fold]
        plan.append((others, folds[number - 1], f"fold {number}/{args.folds}"))
    return plan


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per segmenter, over every tile a learned model did not train on."""
    from embedders.dense import (
        ClassicalSegmenter,
        LearnedSegmenter,
        SegmenterTrainConfig,
        read_training_data,
        train_segmenter,
    )

    tiles = {t.id: t for t in read_training_data(args.data)}
    # (model, the tiles it never saw) per learned model of this run
    models: list[tuple[Any, list[Any]]] = []
    train_seconds, notes = 0.0, []
    learned = "learned" in args.segmenters
    if not learned and not args.learned_weights:
        # the tiles a learned model would be scored on, without training it
        models = [(None, [tiles[i] for i in ids]) for _, ids, _ in _learned_plan(args, tiles)]
    elif args.learned_weights:
        model = LearnedSegmenter(args.learned_weights)
        seen = {t["id"] for t in model.card.get("data", {}).get("train_tiles", [])}
        unseen = [t for i, t in sorted(tiles.items()) if i not in seen]
        if not unseen:
            raise SystemExit(f"{args.learned_weights} was trained on every tile of {args.data}")
        models.append((model, unseen))
        train_seconds = float(model.card.get("training", {}).get("seconds", 0.0))
        steps = model.card.get("training", {}).get("steps_done")
        notes.append(f"{Path(args.learned_weights).name}: {steps} steps, {len(seen)} tiles seen")
    else:
        config = SegmenterTrainConfig(
            steps=40 if args.quick else args.steps,
            max_minutes=args.max_minutes,
            threads=args.threads,
            progress=False,
        )
        for train, ids, how in _learned_plan(args, tiles):
            with tempfile.TemporaryDirectory() as folder:
                result = train_segmenter(
                    train, out=Path(folder) / "fold.safetensors", config=config
                )
            models.append((result.segmenter, [tiles[i] for i in ids]))
            train_seconds += result.seconds
            notes.append(f"{how}: {len(result.history)} steps in {result.seconds:.0f}s")
            print(
                f"learned, {notes[-1]}; loss {result.history[0]['loss']:.3f} -> "
                f"{result.history[-1]['loss']:.3f}"
            )
    scored = sorted((t for _, chosen in models for t in chosen), key=lambda t: t.id)
    rows = []
    for group, name, make, note in (
        ("otsu", "otsu", lambda t: _otsu(t.mpp), "naive baseline: Otsu + connected components"),
        (
            "classical",
            "classical, no gate",
            lambda t: ClassicalSegmenter(mpp=t.mpp, gate=None),
            "defaults tuned on fold 1 of 2 of the shipped tiles",
        ),
        (
            "classical",
            "classical",
            lambda t: ClassicalSegmenter(mpp=t.mpp),
            "with the non-nuclear gate",
        ),
    ):
        if group in args.segmenters:
            labels, seconds = _run(make, scored)
            rows.append(_row(name, scored, labels, seconds, note))
    if learned:
        rows += _learned_rows(models, scored, "; ".join(notes), train_seconds)
    if args.htk_python and "histomicstk" in args.segmenters:
        rows += _htk_rows(args, scored)
    return rows


def _learned_rows(
    models: list[tuple[Any, list[Any]]], scored: list[Any], note: str, train_seconds: float
) -> list[dict[str, Any]]:
    """The learned models' rows, without and with their default gate."""
    rows = []
    for name, gate in (("learned, no gate", None), ("learned", models[0][0].gate)):
        labels, seconds = {}, (0.0, 0.0)
        for model, chosen in models:
            model.gate = gate
            found, spent = _run(lambda t, model=model: model, chosen)
            labels |= found
            seconds = (seconds[0] + spent[0], seconds[1] + spent[1])
        rows.append(_row(name, scored, labels, seconds, note, train_seconds))
    return rows


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished subprocesses."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _htk_rows(args: argparse.Namespace, tiles: list[Any]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        cpu = _children_cpu()
        mpps = {t.id: t.mpp for t in tiles}
        try:
            done = subprocess.run(
                [args.htk_python, "-c", _HTK_SCRIPT, str(args.data), json.dumps(mpps), out],
                capture_output=True,
                text=True,
            )
        except OSError as exc:
            print(f"histomicstk skipped: cannot run {args.htk_python} ({exc})")
            return []
        if done.returncode:
            print(f"histomicstk failed: {done.stderr.strip().splitlines()[-1:]}")
            return []
        seconds = (time.perf_counter() - started, _children_cpu() - cpu)
        labels = {t.id: np.load(f"{out}/{t.id}.npy") for t in tiles}
        note = "documented example settings, scaled by µm/px"
        return [_row("histomicstk", tiles, labels, seconds, note)]


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
    parser.add_argument("--data", type=Path, default=default, help="annotated folder to score")
    parser.add_argument(
        "--train", type=Path, help="annotated folder to train on (default: --data, k-fold)"
    )
    parser.add_argument("--folds", type=int, default=2, help="k of k-fold when --train is --data")
    parser.add_argument(
        "--eval-folds", type=int, nargs="+", help="fold numbers (1-based) to score (default: all)"
    )
    parser.add_argument("--learned-weights", help="score these weights (sfc cells train) instead")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per fold")
    parser.add_argument("--max-minutes", type=float, default=20.0, help="training time per fold")
    parser.add_argument("--threads", type=int, help="torch threads when training")
    parser.add_argument("--out", help="JSON to write (default: benchmarks/results/cells.json)")
    parser.add_argument("--quick", action="store_true", help="12k slide, 40 training steps")
    parser.add_argument("--size", type=int, default=50_000, help="synthetic slide side, px")
    parser.add_argument("--htk-python", help="python with histomicstk installed (a peer)")
    parser.add_argument(
        "--segmenters",
        nargs="+",
        choices=SEGMENTERS,
        default=list(SEGMENTERS),
        help="segmenters to score (histomicstk only with --htk-python; default: all)",
    )
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
        print_table(rows + PUBLISHED, COLUMNS)
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
            "data": str(args.data),
            "train": str(args.train or args.data),
            "accuracy": rows,
            "published": PUBLISHED,
            "throughput": speed,
            "detection_um": DETECTION_UM,
            "quick": args.quick,
        },
        out=args.out,
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
