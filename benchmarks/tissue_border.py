"""Tiles kept at the tissue border, ours vs hs2p, against drawn truth or full-resolution pixels.

For each slide in ``--data`` (and a synthetic slide whose tissue is known
exactly), both grids at ``--mpp`` / ``--tile-px`` are scored tile by tile with
the tissue they really hold: on the synthetic slide the area of the drawn
tissue polygons, on real slides the share of full-resolution pixels that QC
calls tissue (neither glass nor ink). A detector is better when it keeps every
tile with real tissue and few with none.

hs2p runs in its own interpreter (``--hs2p-python``, never a dependency of
ours) with its defaults: ``hsv`` segmentation at downsample 64, tiles kept at
1 % coverage.

    python benchmarks/tissue_border.py --hs2p-python /tmp/hs2p-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import default_data_dir, print_table, write_json

# This folder holds tiling.py: keep it off the path so "import tiling" finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

COLUMNS = [
    "slide",
    "detector",
    "kept",
    "no tissue (<0.5%)",
    "<5% tissue",
    "<25% tissue",
    ">=50% tissue",
    "tissue area kept",
]
_HS2P_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
import hs2p
slide, mpp, tile_px = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
result = hs2p.tile_slide(
    hs2p.SlideSpec(sample_id="x", image_path=Path(slide)),
    tiling=hs2p.TilingConfig(backend="openslide", requested_spacing_um=mpp,
        requested_tile_size_px=tile_px, tolerance=0.05, overlap=0.0),
    segmentation=hs2p.SegmentationConfig(method="hsv", downsample=64),
)
tiles = result.tiles
print(json.dumps({"x": np.asarray(tiles.x).tolist(), "y": np.asarray(tiles.y).tolist()}))
"""


def tissue_scorer(slide: Any, extent: float, level: int, read_px: int, truth: Any) -> Any:
    """A function giving the real tissue fraction of tiles at level-0 ``coords``."""
    import shapely

    from tiling.qc import tile_qc

    if truth is not None:
        shapely.prepare(truth.tissue)

        def drawn(coords: np.ndarray) -> np.ndarray:
            x, y = coords[:, 0], coords[:, 1]
            boxes = shapely.box(x, y, x + extent, y + extent)
            return shapely.area(shapely.intersection(boxes, truth.tissue)) / extent**2

        return drawn

    def pixels(coords: np.ndarray) -> np.ndarray:
        size = (read_px, read_px)
        tiles = [slide.read_region((int(x), int(y)), level, size) for x, y in coords]
        if not tiles:
            return np.zeros(0)
        return tile_qc(np.stack(tiles))["tissue_fraction"].astype(np.float64)

    return pixels


def compare(path: Path, label: str, args: argparse.Namespace, truth: Any) -> list[dict]:
    """Rows for ours and hs2p on one slide."""
    from slideflow_core.slides import open_slide
    from tiling import TilingConfig, detect_tissue, plan_grid

    config = TilingConfig(mpp=args.mpp, tile_px=args.tile_px)
    with open_slide(path) as slide:
        everything = plan_grid(slide, config)
        ours = plan_grid(slide, config, tissue=detect_tissue(slide, method=config.tissue_method))
        score = tissue_scorer(
            slide, everything.extent_px, everything.level, everything.read_px, truth
        )
        total = float(score(everything.coords).sum())
        kept = {f"ours ({config.tissue_method}, >=5% of mask)": ours.coords}
        if args.hs2p_python:
            command = [args.hs2p_python, "-c", _HS2P_SCRIPT, str(path), str(args.mpp)]
            run = subprocess.run([*command, str(args.tile_px)], capture_output=True, text=True)
            lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
            if run.returncode == 0 and lines:
                hs2p = json.loads(lines[-1])
                kept["hs2p (hsv, >=1% coverage)"] = np.stack([hs2p["x"], hs2p["y"]], axis=1)
            else:
                print(f"hs2p failed on {label}: {(run.stderr or run.stdout)[-200:]}")
        rows = []
        for name, coords in kept.items():
            fraction = score(np.asarray(coords, np.int64))
            rows.append(
                {
                    "slide": label,
                    "detector": name,
                    "kept": len(fraction),
                    "no tissue (<0.5%)": int((fraction < 0.005).sum()),
                    "<5% tissue": int((fraction < 0.05).sum()),
                    "<25% tissue": int((fraction < 0.25).sum()),
                    ">=50% tissue": int((fraction >= 0.5).sum()),
                    # Tiles of different grids overlap differently: a share above 1 is possible.
                    "tissue area kept": float(fraction.sum() / total) if total else 0.0,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "CMU-1-Small-Region.svs")
    parser.add_argument("--synthetic", default="40000x32000", help="WxH at 0.5 µm/px, or 0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--hs2p-python", help="interpreter with hs2p installed (separate venv)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/tissue_border.json)")
    args = parser.parse_args()
    rows: list[dict] = []
    paths = [args.data] if args.data.is_file() else sorted(args.data.iterdir())
    for path in paths:
        rows += compare(path, path.name, args, truth=None)
    if args.synthetic not in ("0", ""):
        from slideflow_core.synthetic import SyntheticSlideSpec, write_synthetic_slide

        width, height = (int(v) for v in args.synthetic.lower().split("x"))
        spec = SyntheticSlideSpec(width_px=width, height_px=height, mpp=0.5, seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "synthetic.svs"
            truth = write_synthetic_slide(path, spec)
            rows += compare(path, f"synthetic {args.synthetic}", args, truth=truth)
    print()
    print_table(rows, COLUMNS)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    print(f"wrote {write_json('tissue_border', payload, args.out)}")


if __name__ == "__main__":
    main()
