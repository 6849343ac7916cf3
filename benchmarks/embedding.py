"""Embedding throughput from tile stores: ours (Ray actors + prefetch) vs naive vs the model floor.

For each model (the ``handcrafted`` embedder and a random-init ViT-S/14), over the
tile stores of a project (``--data`` is a project, or slides that are tiled first
at ``--mpp`` / ``--tile-px`` into a temporary project), each measurement in its
own subprocess so its peak memory is its own:

- floor: the model's ``forward`` alone on preprocessed batches already in memory
  (torch on every core), at several batch sizes;
- naive: one thread reads a batch from the store, preprocesses it, runs the
  model, writes the rows, and only then reads the next (``embed_slide`` with no
  loader threads): what a plain loop does;
- naive CLAM-style: per-tile ``read_at`` from the slide, then preprocess and
  forward, sequentially (no store needed);
- ours: ``embedders.embed_cohort`` (Ray actors, loader threads feeding a bounded
  queue), with one actor using every core for torch, with one single-threaded
  actor per core, and in this process (the ``local`` executor, which a cohort of
  a few slides gets by default). "tiles/s" is the steady rate (from the moment
  the workers are ready: start-up excluded, shown apart as "start-up s");
  "end-to-end tiles/s" divides by the whole wall time of the call, building the
  model and Ray's start included (imports are outside every row's clock).

"x floor" divides a row by the model alone at the batch size every method uses,
measured right before and right after that row and averaged: on a shared machine
the load moves while rows run (a floor measured once, minutes away, moved by up to
15 % here), so each row is paired with its own. The floor rows (batch sizes 16,
32 and 64) are divided by the mean of every floor run, so a batch size faster than
the one used shows above 1.00: the cost of the batch choice. The JSON keeps
"floor_drift" (last / first floor run) and "floor_min_over_max". Rows with more
actors than measured slides are not run (the stage would start one actor per slide).

Every method uses the same batch size (``--batch-size``, default the one
``embed`` chooses for the model: ``Embedder.cpu_batch_size`` on a CPU).
``--tiles N`` sizes the synthetic slide tiled with the real ones so that about N
kept tiles are measured: thousands are needed for the steady state of a ViT;
``--quick`` measures about 160.

Peak RSS is reported for the measuring process (the Ray driver for "ours") and
for the largest embedder actor. On a CUDA machine the same script runs on the
GPU and reports its mean utilisation.

    python benchmarks/embedding.py --quick
    python benchmarks/embedding.py --tiles 3000 --models handcrafted
    python benchmarks/embedding.py --data project_dir
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_data_dir, peak_rss_mb, print_table, write_json

# benchmarks/tiling.py is named like the package: take this folder off the import path
# (after importing _common) so that "import tiling" finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

MODELS = {"handcrafted": None, "dinov2_vits14": "random"}  # name -> weights
#: Slides with fewer kept tiles measure per-slide set-up, not throughput: left out.
MIN_TILES = 32
#: Kept tiles per square level-0 pixel of the synthetic slide at 0.25 µm/px, tiled at
#: 0.5 µm/px and 224 px (2,782 kept tiles on a 49,152-px square): sizes it for --tiles.
SYNTHETIC_KEPT_PER_PX2 = 2782 / 49152**2
SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff"}
COLUMNS = [
    "model",
    "method",
    "tiles",
    "batch",
    "tiles/s",
    "x floor",
    "end-to-end tiles/s",
    "e2e x floor",
    "start-up s",
    "loader wait s",
    "peak RSS MB",
    "actor RSS MB",
    "GPU util %",
]


# -- the project -------------------------------------------------------------------------
def synthetic_side_px(tiles: int) -> int:
    """Side of the square synthetic slide giving about ``tiles`` kept tiles (a multiple of 512)."""
    side = (tiles / SYNTHETIC_KEPT_PER_PX2) ** 0.5
    return max(4096, int(np.ceil(side / 512)) * 512)


def prepare_project(data: Path, work: Path, *, mpp: float, tile_px: int, synthetic_px: int) -> Path:
    """The project measured: ``data`` itself, or its slides tiled into ``work/project``.

    A synthetic slide (``synthetic_px`` square at 0.25 µm/px) is tiled with them, so
    there are enough tiles for a steady state.
    """
    if (data / "stores").is_dir():
        return data
    import pandas as pd

    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide
    from tiling import TilingConfig, tile_cohort

    paths = [data] if data.is_file() else sorted(data.iterdir())
    rows = [
        {"slide_id": p.stem, "path": str(p)} for p in paths if p.suffix.lower() in SLIDE_SUFFIXES
    ]
    slide = work / "synthetic.svs"
    write_synthetic_slide(slide, SyntheticSlideSpec(width_px=synthetic_px, height_px=synthetic_px))
    rows.append({"slide_id": "synthetic", "path": str(slide)})
    manifest = work / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    project = work / "project"
    config = TilingConfig(mpp=mpp, tile_px=tile_px)
    report = tile_cohort(manifest, project, config, num_cpus=os.cpu_count(), progress=False)
    print(report, file=sys.stderr)
    return project


def kept_tiles(project: Path, limit: int | None = None) -> list[tuple[Path, np.ndarray]]:
    """The measured stores with their kept tiles, largest first, up to ``limit`` tiles.

    Stores with fewer than :data:`MIN_TILES` kept tiles are left out; slides are
    taken whole, so the last one may pass ``limit``.
    """
    from tiling import open_store

    found = []
    for path in sorted((project / "stores").glob("*.zarr")):
        keep = np.flatnonzero(open_store(path).qc()["keep"].to_numpy())
        if len(keep) >= MIN_TILES:
            found.append((path, keep))
    found.sort(key=lambda item: -len(item[1]))
    out, total = [], 0
    for path, keep in found:
        if limit is not None and total >= limit:
            break
        out.append((path, keep))
        total += len(keep)
    return out


# -- resource sampling -------------------------------------------------------------------
class Sampler:
    """Polls the largest embedder-actor RSS and the GPU utilisation while a run lasts.

    Polling scans every process (about 3.5 ms of CPU and some GIL time each), so
    it runs only when there is something to sample: actors (``actors=True``) or
    a GPU. Measuring the local executor, it would otherwise be a thread of the
    measured process taking the cores the model is measured on.
    """

    def __init__(self, *, actors: bool) -> None:
        self.actor_rss_mb = 0.0
        self.gpu: list[float] = []
        self._actors = actors
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        import torch

        if self._actors or torch.cuda.is_available():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            for proc in psutil.process_iter(["cmdline", "memory_info"]) if self._actors else ():
                title = " ".join(proc.info["cmdline"] or [])
                if "StageWorker" in title and proc.info["memory_info"] is not None:
                    rss = proc.info["memory_info"].rss / 2**20
                    self.actor_rss_mb = max(self.actor_rss_mb, rss)
            self.gpu.extend(_gpu_utilisation())

    @property
    def gpu_mean(self) -> float | str:
        return float(np.mean(self.gpu)) if self.gpu else "n/a"


def _gpu_utilisation() -> list[float]:
    import torch

    if not torch.cuda.is_available():
        return []
    try:
        return [float(torch.cuda.utilization(i)) for i in range(torch.cuda.device_count())]
    except Exception:  # pynvml missing: utilisation unknown, not an error
        return []


# -- one measurement per subprocess -------------------------------------------------------
def _embedder(model: str, weights: str | None) -> Any:
    import torch

    import embedders

    torch.set_num_threads(os.cpu_count() or 1)
    return embedders.create(model, weights=weights)


def run_floor(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Forward passes alone on preprocessed batches held in memory."""
    from tiling import open_store

    emb = _embedder(args.model, args.weights)
    stores = kept_tiles(Path(args.project), args.max_tiles)
    path, keep = stores[0]
    tiles = open_store(path).read_tiles(keep[: max(args.batch_sizes)])
    rows = []
    for batch in args.batch_sizes:
        sample = np.resize(tiles, (batch, *tiles.shape[1:]))  # repeats tiles when few
        inputs = emb.preprocess(sample)
        if str(emb.device).startswith("cuda"):
            inputs = inputs.to(emb.device)
        emb.forward(inputs)  # warm-up (allocations, autotuning)
        n = max(args.floor_tiles, batch)
        calls = -(-n // batch)
        start = time.perf_counter()
        for _ in range(calls):
            emb.forward(inputs)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "method": "floor: forward only",
                "tiles": calls * batch,
                "batch": batch,
                "tiles/s": calls * batch / seconds,
            }
        )
    return rows


def run_naive(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Read, preprocess, forward and write, one batch after another on one thread."""
    from embedders import embed_slide

    emb = _embedder(args.model, args.weights)
    stores = kept_tiles(Path(args.project), args.max_tiles)
    batch = args.batch_sizes[0]
    tiles, seconds = 0, 0.0
    for path, _ in stores:
        start = time.perf_counter()
        result = embed_slide(
            path, emb, batch_size=batch, name="bench-naive", overwrite=True, loader_threads=0
        )
        seconds += time.perf_counter() - start
        tiles += result.n_tiles
    return [
        {
            "method": "naive: read, then forward",
            "tiles": tiles,
            "batch": batch,
            "tiles/s": tiles / seconds,
        }
    ]


def run_clam(args: argparse.Namespace) -> list[dict[str, Any]]:
    """CLAM-style: one ``read_at`` per tile from the slide, then preprocess and forward."""
    from tiling import open_store

    emb = _embedder(args.model, args.weights)
    stores = kept_tiles(Path(args.project), args.max_tiles)
    batch = args.batch_sizes[0]
    tiles, seconds = 0, 0.0
    for path, keep in stores:
        store = open_store(path)
        coords = store.coords[keep]
        mpp, px = float(store.info["mpp_requested"]), int(store.info["tile_px"])
        start = time.perf_counter()
        with store.open_slide() as slide:
            for first in range(0, len(coords), batch):
                xy = coords[first : first + batch]
                read = np.stack([slide.read_at(tuple(c), mpp=mpp, tile_px=px) for c in xy])
                emb.forward(emb.preprocess(read))
        seconds += time.perf_counter() - start
        tiles += len(coords)
    return [
        {
            "method": "naive CLAM: read_at per tile",
            "tiles": tiles,
            "batch": batch,
            "tiles/s": tiles / seconds,
        }
    ]


def run_ours(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``embed_cohort`` with ``--actors`` Ray actors (``0``: the local executor, no Ray).

    The end-to-end clock starts at the call, once the packages every row needs are
    imported (as the other rows' clocks do): it covers building the model, Ray's start
    and the actors', and the whole run.
    """
    # Imported before the clock, as for the other rows (timm is otherwise imported
    # by the first model built: 1.5 s here, an import, not building the model).
    import timm  # noqa: F401
    import torch  # noqa: F401

    from embedders import embed_cohort
    from slideflow_core.ray_runtime import ensure_ray

    project = Path(args.project)
    ids = [path.name.removesuffix(".zarr") for path, _ in kept_tiles(project, args.max_tiles)]
    started = time.perf_counter()
    if args.actors:
        ensure_ray("local", num_cpus=os.cpu_count())  # part of the end-to-end time
    with Sampler(actors=bool(args.actors)) as sampler:
        report = embed_cohort(
            project,
            args.model,
            weights=args.weights,
            cohort=ids,
            batch_size=args.batch_sizes[0],
            num_actors=args.actors or None,
            executor="actors" if args.actors else "local",
            name=f"bench-ours-{args.actors}",
            overwrite=True,
            progress=False,
        )
    wall = time.perf_counter() - started
    assert report.ok, str(report)
    return [
        {
            "method": f"ours: {report.info.get('executor')}",
            "tiles": report.tiles_done,
            "batch": report.results[0].details.get("batch_size"),
            "tiles/s": report.tiles_per_s,
            "end-to-end tiles/s": report.tiles_done / wall,
            "start-up s": wall - report.work_seconds,
            "loader wait s": sum(r.details.get("loader_wait_s", 0.0) for r in report.results),
            "actor RSS MB": sampler.actor_rss_mb if args.actors else "",
            "GPU util %": sampler.gpu_mean,
        }
    ]


RUNNERS = {"floor": run_floor, "naive": run_naive, "clam": run_clam, "ours": run_ours}


def default_batch(model: str) -> int:
    """The batch size ``embed`` uses for ``model`` here when none is given."""
    code = (
        "import embedders, sys; from embedders.run import auto_batch_size; "
        "print(auto_batch_size(embedders.create(sys.argv[1], weights=sys.argv[2] or None)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, model, MODELS.get(model) or ""],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def measure(mode: str, model: str, project: Path, options: list[str]) -> list[dict[str, Any]]:
    """Run one measurement in a fresh interpreter; its rows with its own peak RSS."""
    command = [
        sys.executable,
        __file__,
        "--_run",
        mode,
        "--model",
        model,
        "--project",
        str(project),
        *options,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return [{"model": model, "method": f"{mode}: FAILED"}]
    return [{"model": model, **row} for row in json.loads(done.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="project or slides")
    parser.add_argument("--quick", action="store_true", help="about 160 tiles")
    parser.add_argument(
        "--tiles", type=int, default=3000, help="kept tiles to measure (synthetic slide sized so)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles per forward, every method (default: auto)",
    )
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help="embedder names (space- or comma-separated)",
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/embedding.json)")
    # Inside a measuring subprocess:
    parser.add_argument("--_run", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--max-tiles", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor-tiles", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[64],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--actors", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._run:
        rows = RUNNERS[args._run](args)
        for row in rows:
            row.setdefault("peak RSS MB", peak_rss_mb())
        print(json.dumps(rows))
        return 0

    max_tiles = 160 if args.quick else args.tiles
    floor_tiles = 128 if args.quick else 512
    cores = os.cpu_count() or 1
    batches: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sfc-embed-bench-") as tmp:
        project = prepare_project(
            args.data,
            Path(tmp),
            mpp=args.mpp,
            tile_px=args.tile_px,
            synthetic_px=8192 if args.quick else synthetic_side_px(args.tiles),
        )
        measured_slides = kept_tiles(project, max_tiles)
        n_tiles = sum(len(k) for _, k in measured_slides)
        if not n_tiles:
            raise SystemExit(f"no slide in {project} has {MIN_TILES} kept tiles")
        print(f"project {project}: {n_tiles} kept tiles of {args.tile_px} px", file=sys.stderr)
        rows: list[dict[str, Any]] = []
        drift: dict[str, float] = {}
        spread: dict[str, float] = {}
        for model in [m for item in args.models for m in item.split(",") if m]:
            batch = batches[model] = args.batch_size or default_batch(model)
            common = ["--floor-tiles", str(floor_tiles), "--batch-sizes", str(batch)]
            if MODELS.get(model):
                common += ["--weights", MODELS[model]]
            if max_tiles:
                common += ["--max-tiles", str(max_tiles)]
            floor_batches = ",".join(str(b) for b in sorted({16, 32, 64, batch}))
            found = measure("floor", model, project, [*common, "--batch-sizes", floor_batches])
            # Every row is divided by the model alone at the same batch size, measured
            # right before and right after it: the machine's load moves while rows run.
            floors = [r["tiles/s"] for r in found if r.get("batch") == batch]
            measured = [("naive", common), ("clam", common)]
            for actors in sorted({0, 1, min(cores, len(measured_slides))}):
                measured.append(("ours", [*common, "--actors", str(actors)]))
            for mode, options in measured:
                rows_of_mode = measure(mode, model, project, options)
                after = measure("floor", model, project, common)
                floors += [r["tiles/s"] for r in after]
                reference = float(np.mean(floors[-2:]))
                for row in rows_of_mode:
                    if reference and row.get("tiles/s"):
                        row["x floor"] = row["tiles/s"] / reference
                    if reference and row.get("end-to-end tiles/s"):
                        row["e2e x floor"] = row["end-to-end tiles/s"] / reference
                found += rows_of_mode
            for row in found:
                if "floor" in row["method"] and row.get("tiles/s") and floors:
                    row["x floor"] = row["tiles/s"] / float(np.mean(floors))
            drift[model] = floors[-1] / floors[0] if floors and floors[0] else 0.0
            spread[model] = (min(floors) / max(floors)) if floors else 0.0
            print(
                f"{model}: model alone at batch {batch}, measured {len(floors)} times between "
                f"the rows: {min(floors):.1f}-{max(floors):.1f} tiles/s",
                file=sys.stderr,
            )
            rows += found
            print_table(found, COLUMNS)
            print(file=sys.stderr)
    print()
    print_table(rows, COLUMNS)
    path = write_json(
        "embedding",
        {
            "data": str(args.data),
            "quick": args.quick,
            "cores": cores,
            "batch_size": batches,
            "tiles": n_tiles,
            "floor_drift": drift,
            "floor_min_over_max": spread,
            "mpp": args.mpp,
            "tile_px": args.tile_px,
            "rows": rows,
        },
        args.out,
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
