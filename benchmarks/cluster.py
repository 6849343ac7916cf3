"""Cohort scheduling on Ray: per-slide overhead, driver memory vs cohort size, 1 vs 2 workers.

A cohort of tiny synthetic slides (one 1024 x 1024 px file listed N times, so
the work per slide is small and the same) is tiled by the pipeline
(``cluster.run``, stage ``tile``), each measurement in its own subprocess:

- overhead: ours (Ray, 2 worker processes) vs the naive baseline (the same
  ``tiling.tile_slide`` calls in a loop in one process, no Ray: the work itself)
  vs the floor (that work split perfectly over 2 processes, no scheduling);
  per-slide overhead = ours - floor;
- driver memory: peak RSS of the driver process for a small and a 10x larger
  cohort (it must not grow with the cohort: work in flight is bounded);
- scaling: slides/s with 1 and 2 Ray worker processes on a cohort of heavier
  slides (a 4096 x 4096 px synthetic slide at 0.25 µm/px).

    python benchmarks/cluster.py            # 500 slides; 100 vs 1,000 for memory
    python benchmarks/cluster.py --quick    # 100 slides; 50 vs 500 for memory
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

from _common import peak_rss_mb, print_table, write_json

# This script is named like the package it measures: take its folder off the import
# path so that "import cluster" (always done inside functions) finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

TILE = {"mpp": 0.5, "tile_px": 128, "shard_tiles": 64, "band_tiles": 256}


def _manifest(folder: Path, slide: Path, n: int) -> Path:
    import pandas as pd

    path = folder / f"manifest-{n}.csv"
    ids = [f"s{i:05d}" for i in range(n)]
    pd.DataFrame({"slide_id": ids, "path": [str(slide)] * n}).to_csv(path, index=False)
    return path


def _slide(folder: Path, size: int, mpp: float) -> Path:
    from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

    path = folder / f"synthetic-{size}.svs"
    if not path.exists():
        write_synthetic_slide(path, SyntheticSlideSpec(width_px=size, height_px=size, mpp=mpp))
    return path


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process; returns wall time, slides, tiles and peak RSS."""
    started = time.perf_counter()
    if args.mode == "naive":
        import pandas as pd

        from tiling import TilingConfig, tile_slide

        config = TilingConfig(**TILE)
        rows = pd.read_csv(args.manifest)
        tiles = 0
        for row in rows.itertuples():
            store = Path(args.out) / "stores" / f"{row.slide_id}.zarr"
            tiles += tile_slide(row.path, store, config, slide_id=row.slide_id).n_tiles
        slides = len(rows)
        wall = time.perf_counter() - started
    else:
        import cluster
        from slideflow_core.ray_runtime import ensure_ray

        ensure_ray(num_cpus=args.cpus)
        config = cluster.load_config({"run_dir": args.out, "tiling": TILE})
        begin = time.perf_counter()  # Ray start-up is not scheduling
        report = cluster.run(args.manifest, config, progress=False)
        wall = time.perf_counter() - begin
        assert report.ok, str(report)
        slides = report.stages[0].done
        tiles = report.stages[0].tiles
    return {"wall_s": wall, "slides": slides, "tiles": tiles, "peak_rss_mb": peak_rss_mb()}


def measure(mode: str, manifest: Path, cpus: int = 2) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter with its own output folder."""
    with tempfile.TemporaryDirectory(prefix="sfc-bench-") as out:
        command = [sys.executable, __file__, "--child", mode, "--manifest", str(manifest),
                   "--out", out, "--cpus", str(cpus)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cohorts")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/cluster.json)")
    parser.add_argument("--child", choices=["naive", "ray"], dest="mode", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        if args.mode == "naive":
            args.out = args.out or tempfile.mkdtemp()
        print(json.dumps(child(args)))
        return

    overhead_n, memory_n, scaling_n = (100, (50, 500), 12) if args.quick else (500, (100, 1000), 24)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sfc-bench-data-") as tmp:
        folder = Path(tmp)
        tiny = _slide(folder, 1024, 0.5)
        cohort = _manifest(folder, tiny, overhead_n)
        naive = measure("naive", cohort)
        ours = measure("ray", cohort, cpus=2)
        per = {k: v["wall_s"] / overhead_n for k, v in (("naive", naive), ("ours", ours))}
        floor = per["naive"] / 2
        for name, value, rss in (
            ("naive: tile_slide loop, 1 process (the work)", per["naive"], naive["peak_rss_mb"]),
            ("ours: cluster.run on Ray, 2 workers", per["ours"], ours["peak_rss_mb"]),
            ("floor: the work over 2 processes, no scheduling", floor, None),
        ):
            rows.append({"measure": f"overhead, {overhead_n} tiny slides", "variant": name,
                         "ms/slide": 1000 * value, "slides/s": 1 / value,
                         "driver peak RSS MiB": rss if rss is not None else ""})  # fmt: skip
        overhead_ms = 1000 * (per["ours"] - floor)
        rows.append({"measure": "", "variant": "scheduling overhead (ours - floor)",
                     "ms/slide": overhead_ms})  # fmt: skip

        memory = {}
        for n in memory_n:
            memory[n] = measure("ray", _manifest(folder, tiny, n), cpus=2)
            rows.append({"measure": "driver memory", "variant": f"ours, {n} slides",
                         "ms/slide": 1000 * memory[n]["wall_s"] / n,
                         "slides/s": n / memory[n]["wall_s"],
                         "driver peak RSS MiB": memory[n]["peak_rss_mb"]})  # fmt: skip
        small, large = memory_n
        growth = memory[large]["peak_rss_mb"] - memory[small]["peak_rss_mb"]

        heavy = _slide(folder, 4096, 0.25)
        scaling_manifest = _manifest(folder, heavy, scaling_n)
        scaling = {cpus: measure("ray", scaling_manifest, cpus=cpus) for cpus in (1, 2)}
        for cpus, result in scaling.items():
            rows.append({"measure": f"scaling, {scaling_n} slides 4096 px",
                         "variant": f"ours, {cpus} worker process{'es' if cpus > 1 else ''}",
                         "ms/slide": 1000 * result["wall_s"] / scaling_n,
                         "slides/s": scaling_n / result["wall_s"],
                         "tiles/s": result["tiles"] / result["wall_s"]})  # fmt: skip
        speedup = scaling[1]["wall_s"] / scaling[2]["wall_s"]

    print_table(rows, ["measure", "variant", "ms/slide", "slides/s", "tiles/s",
                       "driver peak RSS MiB"])  # fmt: skip
    print(f"\nscheduling overhead: {overhead_ms:.1f} ms/slide; driver RSS {small} -> {large} "
          f"slides: {growth:+.1f} MiB; 2 vs 1 workers: {speedup:.2f}x")  # fmt: skip
    path = write_json(
        "cluster",
        {
            "quick": args.quick,
            "rows": rows,
            "overhead_ms_per_slide": overhead_ms,
            "driver_rss_growth_mb": growth,
            "speedup_2_vs_1_workers": speedup,
        },
        args.out,
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
