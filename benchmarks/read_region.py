"""Random-access read throughput: our ``Slide`` vs the raw libraries, per backend.

For the largest readable slide in ``--data`` (a file or a folder) and a large
synthetic JPEG-tiled slide, time random ``tile_px`` reads at level 0 for each
backend: raw library calls (the floor our wrapper adds to), ``Slide.read_region``
in one thread, and ``Slide.read_region`` from a thread pool (one handle shared,
or one per thread for TiffSlide). Prints a table and writes JSON.

    python benchmarks/read_region.py --data ../shared/data/slides --synthetic-px 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _common import default_data_dir, peak_rss_mb, print_table, write_json

from slideflow_core.errors import SlideflowError
from slideflow_core.slides import open_slide, readers

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff", ".scn", ".mrxs", ".bif"}


def largest_readable(data: Path) -> Path:
    """The readable slide with the most level-0 pixels in a file or folder."""
    candidates = [data] if data.is_file() else sorted(data.iterdir())
    best: tuple[int, Path] | None = None
    for path in candidates:
        if path.suffix.lower() not in SLIDE_SUFFIXES:
            continue
        try:
            with open_slide(path) as slide:
                area = slide.dimensions[0] * slide.dimensions[1]
        except SlideflowError:
            continue
        if best is None or area > best[0]:
            best = (area, path)
    if best is None:
        raise SystemExit(f"no readable slide in {data}")
    return best[1]


def raw_reader(path: Path, backend: str):
    """A read function on the bare library, without our wrapper."""
    if backend == "openslide":
        import openslide

        handle = openslide.OpenSlide(str(path))
        return lambda loc, size: np.asarray(handle.read_region(loc, 0, size))
    import tiffslide

    handle = tiffslide.TiffSlide(str(path))
    return lambda loc, size: handle.read_region(loc, 0, size, as_array=True)


def _modes(slide, raw, size: tuple[int, int], threads: int) -> dict:
    """Read functions to time, with the thread count each runs on."""

    def ours(spot: tuple[int, int]):
        return slide.read_region(spot, 0, size)

    return {
        "raw library, 1 thread": (lambda spot: raw(spot, size), 1),
        "Slide.read_region, 1 thread": (ours, 1),
        f"Slide.read_region, {threads} threads": (ours, threads),
    }


def bench_slide(path: Path, label: str, args: argparse.Namespace) -> list[dict]:
    rows = []
    for backend in readers.names():
        try:
            slide = open_slide(path, backend=backend)
        except SlideflowError:
            continue
        w, h = slide.dimensions
        size = (min(args.tile_px, w), min(args.tile_px, h))
        rng = np.random.default_rng(args.seed)
        spots = [
            (int(x), int(y))
            for x, y in zip(
                rng.integers(0, max(1, w - size[0]), args.reads),
                rng.integers(0, max(1, h - size[1]), args.reads),
                strict=True,
            )
        ]
        modes = _modes(slide, raw_reader(path, backend), size, args.threads)
        for mode, (fn, threads) in modes.items():
            fn(spots[0])  # warm the handle and caches of the first tile only
            start = time.perf_counter()
            if threads == 1:
                for s in spots:
                    fn(s)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(fn, spots))
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "slide": label,
                    "size": f"{w}x{h}",
                    "backend": backend,
                    "mode": mode,
                    "reads/s": args.reads / seconds,
                    "Mpx/s": args.reads * size[0] * size[1] / seconds / 1e6,
                }
            )
        slide.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="slide or folder")
    parser.add_argument("--synthetic-px", type=int, default=50_000, help="0 to skip")
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/read_region.json)")
    args = parser.parse_args()

    rows = []
    if args.data.exists():
        real = largest_readable(args.data)
        rows += bench_slide(real, real.name, args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic_px:
            from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

            path = Path(tmp) / "synthetic.svs"
            spec = SyntheticSlideSpec(width_px=args.synthetic_px, height_px=args.synthetic_px)
            start = time.perf_counter()
            write_synthetic_slide(path, spec)
            print(
                f"wrote {path.name} {args.synthetic_px}^2 px in {time.perf_counter() - start:.1f}s"
            )
            rows += bench_slide(path, f"synthetic {args.synthetic_px}px", args)
    print_table(rows, ["slide", "size", "backend", "mode", "reads/s", "Mpx/s"])
    print(f"peak RSS {peak_rss_mb():.0f} MiB")
    out = write_json(
        "read_region",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": rows,
            "peak_rss_mb": peak_rss_mb(),
        },
        args.out,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
