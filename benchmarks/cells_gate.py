"""The non-nuclear gate on a real slide: one region, outlines kept and dropped, counts.

Segments a region of a slide with each segmenter twice, with and without the gate
(``embedders.dense.gate``), and draws every nucleus found: green if the gate keeps it,
red if it drops it. Panels side by side in one PNG, counts printed and written as JSON:
in the whole region, in ``--keratin-box`` (a box with no nucleus in it: on the default
region, the keratin lamellae filling the lumen of CMU-1's follicle, every detection
there is false) and in ``--tissue-box`` (cellular dermis, where the gate should keep
everything). Boxes are X Y W H in region pixels; a nucleus is in a box by its centroid.

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


def _in_box(before: np.ndarray, after: np.ndarray, box: list[int]) -> tuple[int, int]:
    """Nuclei of ``before`` with their centroid in ``box``, and how many of them the gate kept."""
    from embedders.dense.morphology import label_means

    n = int(before.max())
    if n == 0:
        return 0, 0
    ys, xs = np.mgrid[: before.shape[0], : before.shape[1]]
    cy, cx = label_means(before, ys.astype(np.float64), n), label_means(before, xs, n)
    x, y, w, h = box
    inside = (cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h)
    kept = np.isin(np.arange(1, n + 1), before[after > 0])
    return int(inside.sum()), int((inside & kept).sum())


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
    parser.add_argument(
        "--keratin-box",
        type=int,
        nargs=4,
        default=[270, 0, 230, 380],
        metavar=("X", "Y", "W", "H"),
        help="box of the region holding no nucleus (keratin, debris), region pixels",
    )
    parser.add_argument(
        "--tissue-box",
        type=int,
        nargs=4,
        default=[0, 0, 150, 500],
        metavar=("X", "Y", "W", "H"),
        help="box of cellular tissue in the region, region pixels",
    )
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
        keratin, tissue = (
            _in_box(before, after, box) for box in (args.keratin_box, args.tissue_box)
        )
        rows.append(
            {
                "segmenter": name,
                "nuclei, no gate": int(before.max()),
                "nuclei, gate": int(after.max()),
                "dropped": int(before.max() - after.max()),
                "dropped per mm²": (before.max() - after.max()) / area_mm2,
                "keratin box, no gate": keratin[0],
                "keratin box, gate": keratin[1],
                "tissue box, no gate": tissue[0],
                "tissue box, gate": tissue[1],
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
            "keratin_box_px": args.keratin_box,
            "tissue_box_px": args.tissue_box,
            "rows": rows,
            "png": str(args.out),
        },
        out=str(args.out.with_suffix(".json")),
    )
    print(f"picture: {args.out}; counts: {path}")


if __name__ == "__main__":
    main()
