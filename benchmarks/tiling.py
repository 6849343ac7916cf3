"""Tiling throughput and store size: ours vs a naive per-tile loop, the JPEG decode floor and hs2p.

For every readable, calibrated slide with tissue in ``--data`` and a large
synthetic JPEG-tiled slide (Aperio-like: 256 px JPEG tiles at 0.5 µm/px), each
``--scenario`` is measured over one tissue grid, each measurement in its own
subprocess so peak RSS is its own:

- ``aligned``: tiles at level 0's own µm/px and stored tile size, the grid on the
  stored tiles (our default stores them by JPEG pass-through, no decode);
- ``resize2x``: tiles at twice level 0's µm/px, the stored tile size (40x to 20x;
  our default decodes at ½ scale with libjpeg's DCT scaling and re-encodes);
- ``requested``: ``--mpp`` / ``--tile-px``.

Rows:

- ours, end to end: ``tiling.tile_slide`` (its own tissue detection and grid,
  reading, QC, Zarr store), so its tile count may differ from the shared grid's;
  with the default codec, with lossless ``zstd``, and coordinates only (QC from
  ⅛-scale decodes). "store/slide" divides the store's tile bytes by the slide's
  bytes for the stored JPEG tiles under its tiles, "store/lossless" by the
  ``zstd`` store's;
- ours on a cohort: ``tiling.tile_cohort`` on local Ray over ``--cohort`` links to
  the slide, each tiled as a slide of its own, so one slide's plan and commit
  overlap another's bands; Ray's start-up is outside the clock, the workers' is
  inside it ("cold workers") or done by an untimed first cohort ("warm workers":
  the steady state of a long run);
- our ``TileReader`` alone: ``per_tile``, ``region`` and ``native``, on 1 and 2
  threads, ``native`` also as 2 processes over halves of the grid, and ``native``
  without the final resize (read only) to separate reading from resizing;
- naive: a Python loop of ``openslide.OpenSlide.read_region`` per tile (CLAM);
- floor: libjpeg-turbo decoding every JPEG tile of the chosen level, nothing
  else, on 1 thread, 2 threads and 2 processes, and only the tiles under the grid;
- hs2p ``6.x`` supertile reading over the same grid, when ``--hs2p-python`` names
  an interpreter with hs2p installed (never a dependency of ours).

Each measurement runs ``--repeat`` times (3), each in a fresh subprocess, and the
table shows the median run, the JSON every run's seconds. On a shared 2-vCPU
machine a core now and then ran at twice its usual speed for a few seconds (one
run of three of the one-thread floor took 2.5 s instead of 4.9 s, the two-process
grid floor 0.51 s instead of 0.75-0.84 s): one run, or the fastest of several,
could flatter or sink any ratio to it; the median is not moved by one such run.

"Mpx/s" counts level pixels delivered (tiles x ``read_px``²; decoded pixels for
the floor), so readers that resize and the floor compare like for like;
"x floor(2c)" divides it by the faster two-core floor, "x grid floor" by the
faster two-core decode of only the stored tiles under the grid (tissue decodes
slower than glass), and "x naive" divides tiles/s by the naive loop's.

    python benchmarks/tiling.py --synthetic 20000x16000
    python benchmarks/tiling.py --data slide.svs --synthetic 0 --scenario aligned
    python benchmarks/tiling.py --hs2p-python /tmp/hs2p-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_data_dir, peak_rss_mb, print_table, write_json

# This script is named like the package it measures: take its folder off the import
# path so that "import tiling" (always done inside functions) finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff", ".scn", ".mrxs", ".bif"}
# CLAM's defaults: median-blurred HSV saturation above 8 is tissue.
_SATURATION_THRESHOLD = 8
_MEDIAN_KERNEL = 7
_MASK_MAX_PX = 2048
_NOTE_CHARS = 70
FLOORS_2C = ("floor: JPEG decode, 2 threads", "floor: JPEG decode, 2 processes")
# Decoding only the stored tiles under the grid: tissue tiles decode slower than the
# glass that dominates a whole level, so this is the floor a tile reader really faces.
GRID_FLOORS_2C = (
    "floor: grid's JPEG tiles only, 2 threads",
    "floor: grid's JPEG tiles only, 2 processes",
)
COLUMNS = [
    "slide",
    "method",
    "tiles",
    "seconds",
    "tiles/s",
    "Mpx/s",
    "x floor(2c)",
    "x grid floor",
    "x naive",
    "store/slide",
    "store/lossless",
    "peak RSS MB",
    "note",
]
SCENARIOS = ("aligned", "resize2x", "requested")
OURS_DEFAULT = "ours: tile_slide end to end"
OURS_LOSSLESS = "ours: tile_slide, zstd lossless"


# -- the shared tissue grid ------------------------------------------------------------
def tissue_grid(path: Path, mpp: float, tile_px: int, min_tissue: float) -> dict[str, Any]:
    """Tile positions on tissue (CLAM-style saturation mask) and how they are read."""
    import cv2

    from slideflow_core.slides import open_slide

    with open_slide(path) as slide:
        choice = slide.best_level_for(mpp)
        read_px = choice.read_px(tile_px)
        extent = read_px * slide.level_downsamples[choice.level]
        width, height = slide.dimensions
        thumb = slide.thumbnail(_MASK_MAX_PX)
        backend = slide.backend_choice.backend
    saturation = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)[..., 1]
    mask = cv2.medianBlur(saturation, _MEDIAN_KERNEL) > _SATURATION_THRESHOLD
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    scale_x, scale_y = mask.shape[1] / width, mask.shape[0] / height
    xs = np.round(np.arange(int(width // extent)) * extent).astype(np.int64)
    ys = np.round(np.arange(int(height // extent)) * extent).astype(np.int64)
    gx, gy = np.meshgrid(xs, ys)
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    x0 = np.clip((coords[:, 0] * scale_x).astype(int), 0, mask.shape[1] - 1)
    y0 = np.clip((coords[:, 1] * scale_y).astype(int), 0, mask.shape[0] - 1)
    x1 = np.clip(((coords[:, 0] + extent) * scale_x).astype(int), x0 + 1, mask.shape[1])
    y1 = np.clip(((coords[:, 1] + extent) * scale_y).astype(int), y0 + 1, mask.shape[0])
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    coverage = inside / ((x1 - x0) * (y1 - y0))
    return {
        "coords": coords[coverage >= min_tissue],
        "level": choice.level,
        "read_px": read_px,
        "resized": choice.needs_resize,
        "backend": backend,
        "level_mpp": choice.level_mpp,
    }


def find_slides(data: Path) -> list[Path]:
    """Readable, calibrated slides in a file or folder."""
    from slideflow_core.errors import SlideflowError
    from slideflow_core.slides import open_slide

    candidates = [data] if data.is_file() else sorted(data.iterdir())
    found = []
    for path in candidates:
        if path.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        try:
            with open_slide(path) as slide:
                slide.best_level_for(slide.mpp)
        except SlideflowError as exc:
            print(f"skip {path.name}: {str(exc).splitlines()[0]}")
            continue
        found.append(path)
    return found


def scenario_grid(path: Path, scenario: str, args: argparse.Namespace) -> tuple[float, int] | str:
    """``(mpp, tile_px)`` of a scenario on a slide, or why it does not apply."""
    from slideflow_core.slides import open_slide
    from tiling.native import find_jpeg_level

    if scenario == "requested":
        return args.mpp, args.tile_px
    with open_slide(path) as slide:
        mpp, size = slide.level_mpp[0], slide.dimensions
    level, why = find_jpeg_level(str(path), size)
    if level is None or level.tile_width != level.tile_height:
        return f"level 0 is not square JPEG tiles ({why})"
    return (mpp if scenario == "aligned" else 2 * mpp), level.tile_width


def synthetic_slide(size: str, cache: Path, seed: int, mpp: float) -> Path:
    """The cached synthetic slide of ``size`` = ``"WxH"`` at ``mpp``, written if missing."""
    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

    width, height = (int(v) for v in size.lower().split("x"))
    path = cache / f"synthetic_{width}x{height}_{mpp}mpp_seed{seed}.svs"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial.svs")
        start = time.perf_counter()
        spec = SyntheticSlideSpec(width_px=width, height_px=height, mpp=mpp, seed=seed)
        write_synthetic_slide(partial, spec)
        partial.rename(path)
        print(f"wrote {path} in {time.perf_counter() - start:.0f}s")
    return path


# -- measurements, each run in a fresh subprocess ----------------------------------------
def _touch(tiles: np.ndarray) -> int:
    # Consume the pixels so nothing downstream could be skipped by laziness.
    return int(tiles[:, ::64, ::64, 0].sum())


def run_reader(job: dict[str, Any]) -> dict[str, Any]:
    """Read the grid with ``TileReader`` (threads; processes are split by :func:`run_split`)."""
    import imagecodecs  # noqa: F401  (imported before the clock, as openslide is for naive)

    from slideflow_core.slides import open_slide
    from tiling.reader import TileReader

    coords = _part(np.load(job["coords"]), job)
    with open_slide(job["slide"]) as slide:
        # The clock starts after opening, as for the other readers; choosing the method
        # (which decodes a sample to compare with the backend) is timed.
        _await_start(job)
        start = time.perf_counter()
        try:
            reader = TileReader(
                slide,
                level=job["level"],
                read_px=job["read_px"],
                tile_px=job["tile_px"],
                method=job["method"],
                threads=job["threads"],
            )
        except ValueError as exc:
            return {"skipped": f"n/a: {str(exc).split(': ', 1)[-1]}"}
        count = 0
        for indices, tiles in reader.read(coords):
            count += len(indices)
            _touch(tiles)
        reader.close()
    return {"tiles": count, "seconds": time.perf_counter() - start, "method": reader.method}


def _part(items: np.ndarray, job: dict[str, Any]) -> np.ndarray:
    """This process's contiguous share of ``items`` when a job is split (``part`` = [k, n])."""
    if "part" not in job:
        return items
    index, count = job["part"]
    return np.array_split(items, count)[index]


def _await_start(job: dict[str, Any]) -> None:
    """A share of a split job waits here, ready, until every share is (see :func:`run_split`)."""
    if "part" in job:
        print("ready", flush=True)
        sys.stdin.readline()


def run_split(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job["split"]`` in ``processes`` concurrent interpreters, each on a share.

    The shares start their clocks together: each reports ready (interpreter started,
    slide opened) and waits until all have, so the slowest start-up does not leave the
    others running alone on the machine, which would flatter the floor.
    """
    count = job["processes"]
    running = [
        _start({**job, "kind": job["split"], "part": [k, count]}, barrier=True)
        for k in range(count)
    ]
    for process in running:  # "ready", or end of output if the share failed early
        while (line := process.stdout.readline()) and line.strip() != "ready":
            pass
    for process in running:
        try:
            process.stdin.write("go\n")
            process.stdin.flush()  # communicate() closes it
        except BrokenPipeError:  # that share failed; _finish reports it
            pass
    results = [_finish(process) for process in running]
    failed = [r["skipped"] for r in results if "skipped" in r]
    if failed:
        return {"skipped": failed[0]}
    return {
        "tiles": sum(r["tiles"] for r in results),
        # The parts run at once; like the threaded runs, interpreter start-up is not timed.
        "seconds": max(r["seconds"] for r in results),
        "decoded_px": sum(r.get("decoded_px", 0) for r in results) or None,
        "method": results[0].get("method", ""),
        # Memory held at once: every process's peak (an upper bound) plus this one.
        "peak_rss_mb": sum(r["peak_rss_mb"] for r in results) + peak_rss_mb(),
    }


def run_naive(job: dict[str, Any]) -> dict[str, Any]:
    """CLAM's loop: one ``OpenSlide.read_region`` per tile, RGB array, resize if needed."""
    import openslide

    from slideflow_core.slides import resize

    coords = np.load(job["coords"])
    size = (job["read_px"], job["read_px"])
    start = time.perf_counter()
    handle = openslide.OpenSlide(job["slide"])
    for x, y in coords.tolist():
        tile = np.asarray(handle.read_region((x, y), job["level"], size).convert("RGB"))
        if job["read_px"] != job["tile_px"]:
            tile = resize(tile, (job["tile_px"], job["tile_px"]))
        _touch(tile[None])
    handle.close()
    return {"tiles": len(coords), "seconds": time.perf_counter() - start}


def run_floor(job: dict[str, Any]) -> dict[str, Any]:
    """Decode every stored JPEG tile of the level (or the grid's) with libjpeg-turbo only."""
    import imagecodecs

    from slideflow_core.slides import open_slide
    from tiling.native import find_jpeg_level, tiles_touched

    with open_slide(job["slide"]) as slide:
        size = slide.level_dimensions[job["level"]]
        downsample = slide.level_downsamples[job["level"]]
    level, why = find_jpeg_level(job["slide"], size)
    if level is None:
        return {"skipped": why}
    stored = np.flatnonzero(level.bytecounts)
    if job.get("grid_only"):
        xy = np.floor(np.load(job["coords"]) / downsample).astype(np.int64)
        touched = tiles_touched(level, xy[:, 0], xy[:, 1], job["read_px"], job["read_px"])
        stored = np.intersect1d(stored, touched)
    stored = _part(stored, job).tolist()
    fd = os.open(job["slide"], os.O_RDONLY)
    _await_start(job)

    def decode(index: int) -> None:
        data = os.pread(fd, int(level.bytecounts[index]), int(level.offsets[index]))
        imagecodecs.jpeg8_decode(
            data, tables=level.tables, colorspace=level.colorspace, outcolorspace="RGB"
        )

    start = time.perf_counter()
    if job["threads"] == 1:
        for index in stored:
            decode(index)
    else:
        with ThreadPoolExecutor(job["threads"]) as pool:
            for _ in pool.map(decode, stored, chunksize=64):
                pass
    seconds = time.perf_counter() - start
    os.close(fd)
    return {
        "tiles": len(stored),
        "seconds": seconds,
        "decoded_px": len(stored) * level.tile_width * level.tile_height,
    }


def run_ours(job: dict[str, Any]) -> dict[str, Any]:
    """``tiling.tile_slide`` end to end into a throwaway store, in this process."""
    try:
        from tiling import TilingConfig, tile_slide
    except ImportError as exc:
        return {"skipped": f"ours: not available ({exc})"}
    store = Path(job["workdir"]) / "ours.zarr"
    config = TilingConfig(
        mpp=job["mpp"],
        tile_px=job["tile_px"],
        codec=job.get("codec", "auto"),
        store_pixels=job.get("store_pixels", True),
    )
    start = time.perf_counter()
    result = tile_slide(job["slide"], store, config, overwrite=True)
    seconds = time.perf_counter() - start
    sizes = _store_sizes(job["slide"], store)
    shutil.rmtree(store, ignore_errors=True)
    details = getattr(result, "details", {}) or {}
    return {
        "tiles": int(result.n_tiles),
        "seconds": seconds,
        "method": f"{details.get('read_method', '')}, {details.get('codec', '')}",
        **sizes,
    }


def _store_sizes(slide: str, store: Path) -> dict[str, int]:
    """Bytes of the store's tiles, and of the slide's stored JPEG tiles under them."""
    from tiling import open_store
    from tiling.native import find_jpeg_level, tiles_touched

    tiles = open_store(store)
    if not tiles.has_pixels:
        return {}
    sizes = {"store_bytes": sum(f.stat().st_size for f in (store / "tiles").rglob("*"))}
    info = tiles.info
    with tiles.open_slide() as handle:
        size = handle.level_dimensions[info["level"]]
        downsample = handle.level_downsamples[info["level"]]
    level, _ = find_jpeg_level(slide, size)
    if level is not None and len(tiles):
        xy = np.floor(tiles.coords / downsample).astype(np.int64)
        side = int(info["read_px"])
        under = np.unique(tiles_touched(level, xy[:, 0], xy[:, 1], side, side))
        sizes["slide_bytes"] = int(level.bytecounts[under].sum())
    return sizes


def run_ours_ray(job: dict[str, Any]) -> dict[str, Any]:
    """``tiling.tile_cohort`` on a local Ray instance (started before the clock) over a
    cohort of ``copies`` links to the slide, each tiled as its own slide (its own tissue
    detection, probes and store): plans, bands and commits of different slides overlap
    on the cores. ``warm``: the workers have tiled a first cohort of other links
    (untimed), so the clock sees the steady state; else it includes the workers'
    start-up."""
    try:
        import ray

        from slideflow_core.cohort import Cohort, SlideRecord
        from tiling import TilingConfig, tile_cohort
    except ImportError as exc:
        return {"skipped": f"ours on Ray: not available ({exc})"}
    work = Path(job["workdir"]) / "ours-ray"
    shutil.rmtree(work, ignore_errors=True)
    links = work / "slides"
    links.mkdir(parents=True)
    suffix = Path(job["slide"]).suffix

    def cohort(name: str, count: int) -> Cohort:
        records = []
        for k in range(count):
            link = links / f"{name}{k}{suffix}"
            link.symlink_to(Path(job["slide"]).resolve())
            records.append(SlideRecord(f"{name}{k}", str(link), "bench"))
        return Cohort(records)

    config = TilingConfig(mpp=job["mpp"], tile_px=job["tile_px"])
    ray.init(num_cpus=job["processes"], include_dashboard=False, log_to_driver=False)
    try:
        if job["warm"]:  # other paths: nothing a worker keeps per slide file is reused
            warm_up = cohort("warm", 2 * job["processes"])
            tile_cohort(warm_up, work / "warm-up", config, progress=False)
        timed = cohort("bench", job["copies"])
        start = time.perf_counter()
        report = tile_cohort(timed, work / "timed", config, progress=False)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in report.results if r.status != "done"]
    if failed:
        return {"skipped": f"ours on Ray: {failed[0].status} ({failed[0].error})"}
    details = report.results[0].details or {}
    method = f"{details.get('read_method', '')}, {details.get('codec', '')} (Ray)"
    return {
        "tiles": sum(int(r.n_tiles) for r in report.results),
        "seconds": seconds,
        "method": method,
    }


_WORKERS = {
    "reader": run_reader,
    "split": run_split,
    "naive": run_naive,
    "floor": run_floor,
    "ours": run_ours,
    "ours_ray": run_ours_ray,
}

# Runs in hs2p's own interpreter: only hs2p, numpy and Pillow are importable there.
_HS2P_SCRIPT = r"""
import json, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np
from PIL import Image
import hs2p
from hs2p.wsi.streaming.stream import iter_tile_arrays_from_result

job = json.loads(sys.argv[1])
coords = np.load(job["coords"])
result = hs2p.tile_slide(
    hs2p.SlideSpec(sample_id="bench", image_path=Path(job["slide"])),
    tiling=hs2p.TilingConfig(backend="openslide", requested_spacing_um=job["mpp"],
        requested_tile_size_px=job["tile_px"], tolerance=0.05, overlap=0.0),
    segmentation=hs2p.SegmentationConfig(method="hsv", downsample=64),
)
geometry = result.tiles
if (geometry.read_level, geometry.read_tile_size_px) != (job["level"], job["read_px"]):
    reads = f"level {geometry.read_level} at {geometry.read_tile_size_px} px"
    print(json.dumps({"skipped": f"hs2p reads {reads}, ours level {job['level']} at "
                      f"{job['read_px']} px"}))
    sys.exit()
# Same grid as ours; hs2p's own tissue segmentation above is not timed.
result = replace(result, step_px_lv0=int(round(geometry.tile_size_lv0)), tiles=replace(geometry,
    x=coords[:, 0].copy(), y=coords[:, 1].copy(),
    tissue_fractions=np.ones(len(coords), np.float32), tile_index=None))
start = time.perf_counter()
count = 0
size = (job["tile_px"], job["tile_px"])
for tile in iter_tile_arrays_from_result(result=result):
    tile = np.asarray(tile)[..., :3]
    if tile.shape[0] != job["tile_px"]:
        tile = np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.LANCZOS,
                                                       reducing_gap=2.0))
    count += 1
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
print(json.dumps({"tiles": count, "seconds": seconds, "method": f"hs2p {hs2p.__version__}",
                  "peak_rss_mb": int(status) / 1024}))
"""


def _start(
    job: dict[str, Any], python: str | None = None, *, barrier: bool = False
) -> subprocess.Popen[str]:
    if python is None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    else:
        command = [python, "-c", _HS2P_SCRIPT, json.dumps(job)]
    stdin = subprocess.PIPE if barrier else subprocess.DEVNULL
    return subprocess.Popen(
        command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        return {"skipped": f"failed: {tail[0][:160]}"}
    return json.loads(lines[-1])


def measure(job: dict[str, Any], python: str | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    return _finish(_start(job, python))


def worker_main(raw: str) -> None:
    job = json.loads(raw)
    out = _WORKERS[job["kind"]](job)
    out.setdefault("peak_rss_mb", peak_rss_mb())
    print(json.dumps(out))


# -- one slide: every measurement side by side -----------------------------------------
def plan_runs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(label, job) pairs in the order they are run and shown."""
    runs: list[tuple[str, dict[str, Any]]] = [
        ("floor: JPEG decode, 1 thread", {"kind": "floor", "threads": 1}),
        (FLOORS_2C[0], {"kind": "floor", "threads": 2}),
        (FLOORS_2C[1], {"kind": "split", "split": "floor", "threads": 1, "processes": 2}),
        (GRID_FLOORS_2C[0], {"kind": "floor", "threads": 2, "grid_only": True}),
        (
            GRID_FLOORS_2C[1],
            {"kind": "split", "split": "floor", "threads": 1, "processes": 2, "grid_only": True},
        ),
        ("naive: openslide per tile", {"kind": "naive"}),
        (OURS_DEFAULT, {"kind": "ours"}),
        (OURS_LOSSLESS, {"kind": "ours", "codec": "zstd"}),
        ("ours: tile_slide, coordinates only", {"kind": "ours", "store_pixels": False}),
        (
            f"ours: tile_cohort on Ray, {args.cohort} slides, cold workers",
            {"kind": "ours_ray", "processes": 2, "copies": args.cohort, "warm": False},
        ),
        (
            f"ours: tile_cohort on Ray, {args.cohort} slides, warm workers",
            {"kind": "ours_ray", "processes": 2, "copies": args.cohort, "warm": True},
        ),
    ]
    for method in args.methods:
        for threads in (1, 2):
            runs.append(
                (
                    f"reader {method}, {threads} thread{'s' * (threads > 1)}",
                    {"kind": "reader", "method": method, "threads": threads},
                )
            )
    if "native" in args.methods:
        runs.append(
            (
                "reader native, 2 processes",
                {
                    "kind": "split",
                    "split": "reader",
                    "method": "native",
                    "threads": 1,
                    "processes": 2,
                },
            )
        )
        runs.append(
            (
                "reader native, 2 threads, no resize",
                {"kind": "reader", "method": "native", "threads": 2, "no_resize": True},
            )
        )
    return runs


def bench_slide(
    path: Path, label: str, scenario: str, args: argparse.Namespace, work: Path
) -> list[dict]:
    setting = scenario_grid(path, scenario, args)
    if isinstance(setting, str):
        print(f"{label} [{scenario}]: skipped, {setting}")
        return []
    mpp, tile_px = setting
    grid = tissue_grid(path, mpp, tile_px, args.min_tissue)
    if len(grid["coords"]) < args.min_tiles:
        print(f"{label} [{scenario}]: skipped, {len(grid['coords'])} tiles < {args.min_tiles}")
        return []
    label = f"{label} [{scenario}]"
    coords_file = work / "grid.coords.npy"
    np.save(coords_file, grid["coords"])
    base = {
        "slide": str(path),
        "coords": str(coords_file),
        "level": grid["level"],
        "read_px": grid["read_px"],
        "tile_px": tile_px,
        "mpp": mpp,
        "workdir": str(work),
    }
    print(
        f"{label}: {len(grid['coords'])} tissue tiles, level {grid['level']} "
        f"({grid['level_mpp']:.3f} µm/px), read {grid['read_px']} px -> {tile_px} px "
        f"at {mpp:.4f} µm/px"
    )
    rows = []
    for name, extra in plan_runs(args):
        job = {**base, **extra}
        if job.pop("no_resize", False):
            job["tile_px"] = job["read_px"]
        result = _median_run(job, args.repeat)
        rows.append(_row(label, name, result, grid["read_px"]))
        print(f"  {name}: {_summary(rows[-1])}", flush=True)
    if args.hs2p_python:
        result = _median_run(base, args.repeat, python=args.hs2p_python)
        rows.append(_row(label, "hs2p: supertiles, openslide", result, grid["read_px"]))
    else:
        rows.append(_row(label, "hs2p", {"skipped": "not run (pass --hs2p-python)"}, 0))
    print(f"  {rows[-1]['method']}: {_summary(rows[-1])}", flush=True)
    _add_ratios(rows)
    return rows


def _median_run(job: dict[str, Any], repeat: int, python: str | None = None) -> dict[str, Any]:
    """``job`` measured ``repeat`` times: the median run (of an even count, the faster middle
    one), with every run's seconds (``runs_s``)."""
    results = [measure(job, python=python) for _ in range(repeat)]
    timed = sorted((r for r in results if "skipped" not in r), key=lambda r: r["seconds"])
    if not timed:
        return results[0]
    return {**timed[(len(timed) - 1) // 2], "runs_s": [r["seconds"] for r in timed]}


def _row(label: str, name: str, result: dict[str, Any], read_px: int) -> dict[str, Any]:
    if "skipped" in result:
        return {"slide": label, "method": name, "note": result["skipped"][:_NOTE_CHARS]}
    seconds = result["seconds"]
    pixels = result.get("decoded_px") or result["tiles"] * read_px * read_px
    note = result.get("method", "")
    row = {
        "slide": label,
        "method": name,
        "tiles": result["tiles"],
        "seconds": seconds,
        "tiles/s": result["tiles"] / seconds,
        "Mpx/s": pixels / seconds / 1e6,
        "peak RSS MB": result["peak_rss_mb"],
        "note": f"used {note}" if note and not name.startswith(("floor", "naive")) else "",
        "runs_s": result.get("runs_s", [seconds]),
    }
    if "store_bytes" in result:
        row["store_bytes"] = result["store_bytes"]
        if result.get("slide_bytes"):
            row["slide_bytes"] = result["slide_bytes"]
            row["store/slide"] = result["store_bytes"] / result["slide_bytes"]
    return row


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    # Both cores: the better of two threads and two processes.
    floor = max((r.get("Mpx/s", 0) for r in rows if r["method"] in FLOORS_2C), default=0)
    by_name = {r["method"]: r for r in rows}
    grid_floor = max((r.get("Mpx/s", 0) for r in rows if r["method"] in GRID_FLOORS_2C), default=0)
    naive = by_name.get("naive: openslide per tile", {}).get("tiles/s")
    lossless = by_name.get(OURS_LOSSLESS, {}).get("store_bytes")
    for row in rows:
        if lossless and "store_bytes" in row:
            row["store/lossless"] = row["store_bytes"] / lossless
        if "Mpx/s" not in row or row["method"].startswith("floor"):
            continue
        if floor:
            row["x floor(2c)"] = row["Mpx/s"] / floor
        if grid_floor:
            row["x grid floor"] = row["Mpx/s"] / grid_floor
        if naive:
            row["x naive"] = row["tiles/s"] / naive


def _summary(row: dict[str, Any]) -> str:
    if "tiles/s" not in row:
        return row.get("note", "")
    return f"{row['tiles/s']:.1f} tiles/s, {row['Mpx/s']:.1f} Mpx/s, {row['peak RSS MB']:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="slide or folder")
    parser.add_argument("--synthetic", default="40000x32000", help="WxH, or 0 to skip")
    parser.add_argument("--synthetic-mpp", type=float, default=0.5, help="its level-0 µm/px")
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=SCENARIOS,
        default=["aligned", "resize2x"],
        help="grids to measure (see the module doc)",
    )
    parser.add_argument("--cache", type=Path, help="synthetic slide cache (default: temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mpp", type=float, default=0.5, help="for the 'requested' scenario")
    parser.add_argument("--tile-px", type=int, default=256, help="for the 'requested' scenario")
    parser.add_argument("--min-tissue", type=float, default=0.1, help="tissue fraction per tile")
    parser.add_argument("--min-tiles", type=int, default=16, help="skip slides with fewer")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["native"],
        help="TileReader methods timed alone (per_tile, region, native)",
    )
    parser.add_argument(
        "--cohort", type=int, default=8, help="slides (links to each slide) in the Ray rows"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; the median is shown"
    )
    parser.add_argument("--hs2p-python", help="interpreter with hs2p installed (separate venv)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/tiling.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slides = [(p, p.name) for p in (find_slides(args.data) if args.data.exists() else [])]
        if args.synthetic not in ("0", ""):
            cache = args.cache or work / "cache"
            synthetic = synthetic_slide(args.synthetic, cache, args.seed, args.synthetic_mpp)
            slides.append((synthetic, f"synthetic {args.synthetic}"))
        for path, label in slides:
            for scenario in args.scenario:
                rows += bench_slide(path, label, scenario, args, work)
    print()
    print_table(rows, COLUMNS)
    out = write_json(
        "tiling",
        {"args": {k: str(v) for k, v in vars(args).items() if k != "worker"}, "rows": rows},
        args.out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
