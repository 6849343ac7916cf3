"""The non-nuclear gate on a real slide: one region, outlines kept and dropped, counts.

Segments a region of a slide with each segmenter twice, with and without the gate
(``embedders.dense.gate``), and draws every nucleus found: green if the gate keeps it,
red if it drops it. Panels side by side in one PNG, counts printed and written as JSON.

    python benchmarks/cells_gate.py --slide ../shared/data/slides/CMU-1-Small-Region.svs \\
        --learned-weights models/nuclei-learned.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import RESULTS_DIR, print_table, write_json

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _panel(region: np.ndarray, before: np.ndarray, after: np.ndarray, title: str) -> np.ndarray:
    """BGR picture of ``region`` with kept nuclei in green, gated ones in red."""
    picture = np.ascontiguousarray(region[:, :, ::-1])
    kept = np.unique(before[after > 0])
    for label, colour in ((False, (0, 0, 255)), (True, (0, 200, 0))):
        mask = (before > 0) & (np.isin(before, kept) == label)
        edges = mask & (
            cv2.morphologyEx(before.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
        )
        picture[edges] = colour
    cv2.putText(picture, title, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    return picture


def main() -> None:
    from embedders.dense import ClassicalSegmenter, LearnedSegmenter
    from embedders.dense.data import AnnotatedTile
    from embedders.dense.fit import segment_at
    from slideflow_core.slides import open_slide

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared/data/slides/CMU-1-Small-Region.svs"
    parser.add_argument("--slide", type=Path, default=default, help="slide file")
    parser.add_argument(
        "--region",
        type=int,
        nargs=4,
        default=[1050, 1150, 500, 500],
        metavar=("X", "Y", "W", "H"),
        help="region in pixels at --mpp",
    )
    parser.add_argument("--mpp", type=float, default=0.5, help="µm/px to read the region at")
    parser.add_argument("--learned-weights", help="also the learned segmenter (sfc cells train)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cells_gate.png", help="PNG")
    args = parser.parse_args()
    x, y, width, height = args.region
    with open_slide(args.slide) as slide:
        scale = args.mpp / slide.mpp
        origin = (round(x * scale), round(y * scale))
        full = np.asarray(slide.read_at(origin, mpp=args.mpp, tile_px=(width, height)))
    region = np.ascontiguousarray(full[:height, :width, :3])
    tile = AnnotatedTile(
        id="region", image=region, instances=np.zeros((height, width), np.int32), mpp=args.mpp
    )
    makers: list[tuple[str, Any, Any]] = [
        (
            "classical",
            ClassicalSegmenter(mpp=args.mpp, gate=None),
            ClassicalSegmenter(mpp=args.mpp),
        ),
    ]
    if args.learned_weights:
        makers.append(
            (
                "learned",
                LearnedSegmenter(args.learned_weights, gate=None),
                LearnedSegmenter(args.learned_weights),
            )
        )
    rows, panels = [], []
    for name, ungated, gated in makers:
        before, after = segment_at(ungated, tile), segment_at(gated, tile)
        area_mm2 = width * height * args.mpp**2 / 1e6
        rows.append(
            {
                "segmenter": name,
                "nuclei, no gate": int(before.max()),
                "nuclei, gate": int(after.max()),
                "dropped": int(before.max() - after.max()),
                "dropped per mm²": (before.max() - after.max()) / area_mm2,
            }
        )
        panels.append(
            _panel(
                region,
                before,
                after,
                f"{name}: {rows[-1]['dropped']} of {rows[-1]['nuclei, no gate']} gated",
            )
        )
    print_table(rows, list(rows[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(panels, axis=1))
    path = write_json(
        "cells_gate",
        {
            "slide": str(args.slide),
            "region_px": args.region,
            "mpp": args.mpp,
            "rows": rows,
            "png": str(args.out),
        },
        out=str(args.out.with_suffix(".json")),
    )
    print(f"picture: {args.out}; counts: {path}")


if __name__ == "__main__":
    main()
