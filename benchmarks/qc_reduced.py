"""How much QC on reduced tiles (``TilingConfig.qc_scale``) changes full-resolution QC verdicts.

For every readable, calibrated slide in ``--data``, the slide is tiled twice
(coordinates only, same grid): QC on full-resolution tiles (``qc_scale=1``) and
on tiles reduced ``--qc-scale`` times (the default 8: a DCT-scaled decode, or
the coarser pyramid level, never a full decode). The table gives, per slide,
how many ``keep`` verdicts flip each way, the mean absolute change of the tissue
and pen fractions, and the rank correlation of the blur score (its scale
differs by design). Timings are the whole ``tile_slide`` calls.

    python benchmarks/qc_reduced.py
    python benchmarks/qc_reduced.py --data slide.svs --mpp 0.5 --tile-px 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_data_dir, print_table, write_json

# This folder holds tiling.py: keep it off the path so "import tiling" finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SLIDE_SUFFIXES = {".svs", ".tif", ".tiff", ".ndpi", ".dcm", ".qptiff", ".scn", ".mrxs", ".bif"}
COLUMNS = [
    "slide",
    "tiles",
    "kept full",
    "kept reduced",
    "kept->dropped",
    "dropped->kept",
    "agreement",
    "|d tissue|",
    "|d pen|",
    "blur rank corr",
    "s full",
    "s reduced",
]


def compare(path: Path, args: argparse.Namespace, work: Path) -> dict[str, Any] | str:
    """One slide's row, or why it was skipped."""
    from slideflow_core.errors import SlideflowError
    from slideflow_core.slides import open_slide
    from tiling import TilingConfig, open_store, tile_slide

    try:
        with open_slide(path) as slide:
            mpp = args.mpp or slide.mpp
        frames, seconds = {}, {}
        for scale in (1, args.qc_scale):
            config = TilingConfig(mpp=mpp, tile_px=args.tile_px, store_pixels=False, qc_scale=scale)
            store = work / f"{path.stem}-{scale}.zarr"
            start = time.perf_counter()
            tile_slide(path, store, config, overwrite=True)
            seconds[scale] = time.perf_counter() - start
            frames[scale] = open_store(store).qc()
    except SlideflowError as exc:
        return str(exc).splitlines()[0]
    full, reduced = frames[1], frames[args.qc_scale]
    if len(full) < args.min_tiles:
        return f"{len(full)} tiles < {args.min_tiles}"
    keep_full, keep_reduced = full["keep"].to_numpy(), reduced["keep"].to_numpy()
    return {
        "slide": path.name,
        "tiles": len(full),
        "kept full": int(keep_full.sum()),
        "kept reduced": int(keep_reduced.sum()),
        "kept->dropped": int((keep_full & ~keep_reduced).sum()),
        "dropped->kept": int((~keep_full & keep_reduced).sum()),
        "agreement": float((keep_full == keep_reduced).mean()),
        "|d tissue|": float(np.abs(full["tissue_fraction"] - reduced["tissue_fraction"]).mean()),
        "|d pen|": float(np.abs(full["pen_fraction"] - reduced["pen_fraction"]).mean()),
        "blur rank corr": _rank_correlation(full["blur"].to_numpy(), reduced["blur"].to_numpy()),
        "s full": seconds[1],
        "s reduced": seconds[args.qc_scale],
    }


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="slide or folder")
    parser.add_argument("--mpp", type=float, help="tiling µm/px (default: each slide's own)")
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--qc-scale", type=int, default=8, choices=(2, 4, 8))
    parser.add_argument("--min-tiles", type=int, default=8, help="skip slides with fewer")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/qc_reduced.json)")
    args = parser.parse_args()
    paths = [args.data] if args.data.is_file() else sorted(args.data.iterdir())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            if path.suffix.lower() not in SLIDE_SUFFIXES:
                continue
            row = compare(path, args, Path(tmp))
            if isinstance(row, str):
                print(f"skip {path.name}: {row}")
                continue
            rows.append(row)
            print(f"{path.name}: agreement {row['agreement']:.3f}", flush=True)
    print()
    print_table(rows, COLUMNS)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    print(f"wrote {write_json('qc_reduced', payload, args.out)}")


if __name__ == "__main__":
    main()
