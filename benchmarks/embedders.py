"""Per-model CPU throughput of the registered embedders (tiles/s at batch 32, peak RSS).

For each model, side by side: the bare network on tensors already normalised in memory
(the floor for our wrapper), our ``Embedder.embed`` on uint8 tiles (resize + normalise +
forward), a naive per-tile torchvision ``ToTensor``/``Normalize`` loop feeding the same
network (what CLAM-style scripts do), and two variants of the bare network:
``channels_last`` and ``torch.compile``. Every model runs in its own subprocess so that
its peak RSS is its own. Random-init weights: speed does not depend on their values.

    python benchmarks/embedders.py [--quick] [--models a,b] [--batch 32] [--tile-px 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import peak_rss_mb, print_table, write_json  # noqa: E402

# This script's name would shadow the ``embedders`` package: drop its folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

DEFAULT_MODELS = ("handcrafted", "resnet50-trunc", "dinov2_vits14", "pluto_p16", "uni")
QUICK_MODELS = ("handcrafted", "resnet50-trunc", "dinov2_vits14", "pluto_p16")


def _rate(fn, n_tiles: int, repeat: int) -> float:
    fn()  # warm-up (and compilation for torch.compile)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return n_tiles * repeat / (time.perf_counter() - start)


def measure(name: str, batch: int, tile_px: int, repeat: int, compile_: bool) -> dict:
    """All variants for one model, in this process."""
    import numpy as np
    import torch

    import embedders

    import_rss = peak_rss_mb()  # torch, timm, OpenCV...: the same for every model
    torch.manual_seed(0)
    weights = None if name == "handcrafted" else "random"
    emb = embedders.create(name, weights=weights)
    tiles = np.random.default_rng(0).integers(0, 256, (batch, tile_px, tile_px, 3), np.uint8)
    row: dict = {"model": name, "dim": emb.dim, "batch": batch, "tile_px": tile_px}
    row["ours_tiles_s"] = _rate(lambda: emb.embed(tiles), batch, repeat)
    row["preprocess_tiles_s"] = _rate(lambda: emb.preprocess(tiles), batch, repeat)
    if name != "handcrafted":
        from torchvision import transforms

        network = emb.network
        ready = emb.preprocess(tiles)

        def bare(x: torch.Tensor = ready) -> None:
            with torch.inference_mode():
                emb.network_forward(x)

        naive_tf = transforms.Compose(
            [
                transforms.ToPILImage(),
                transforms.Resize(emb.input_px),
                transforms.ToTensor(),
                transforms.Normalize(emb.card.mean, emb.card.std),
            ]
        )

        def naive() -> None:
            x = torch.stack([naive_tf(t) for t in tiles])
            with torch.inference_mode():
                emb.network_forward(x)

        row["model_only_tiles_s"] = _rate(bare, batch, repeat)
        row["naive_tiles_s"] = _rate(naive, batch, repeat)
        emb.network = network.to(memory_format=torch.channels_last)
        cl = ready.contiguous(memory_format=torch.channels_last)
        row["channels_last_tiles_s"] = _rate(lambda: bare(cl), batch, repeat)
        emb.network = network.to(memory_format=torch.contiguous_format)
        if compile_:
            compiled = torch.compile(emb.network_forward)

            def run_compiled() -> None:
                with torch.inference_mode():
                    compiled(ready)

            try:
                row["compiled_tiles_s"] = _rate(run_compiled, batch, repeat)
            except Exception as err:  # report, do not abort the table
                row["compiled_tiles_s"] = f"failed: {type(err).__name__}"
        row["ours_vs_model_only"] = row["ours_tiles_s"] / row["model_only_tiles_s"]
    row["import_rss_mb"] = import_rss
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, 1 repeat, no compile")
    parser.add_argument("--models", help="comma-separated registry names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tile-px", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--out", help="JSON path (default benchmarks/results/embedders.json)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one model, print JSON
    parser.add_argument("--compile", dest="compile_", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.one:
        row = measure(args.one, args.batch, args.tile_px, repeat, args.compile_)
        print(json.dumps(row))
        return 0
    models = (
        args.models.split(",") if args.models else (QUICK_MODELS if args.quick else DEFAULT_MODELS)
    )
    rows = []
    for name in models:
        cmd = [sys.executable, __file__, "--one", name, "--batch", str(args.batch)]
        cmd += ["--tile-px", str(args.tile_px), "--repeat", str(repeat)]
        if not args.quick:
            cmd.append("--compile")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            rows.append({"model": name, "error": done.stderr.strip().splitlines()[-1]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    columns = [
        "model",
        "dim",
        "model_only_tiles_s",
        "ours_tiles_s",
        "ours_vs_model_only",
        "naive_tiles_s",
        "channels_last_tiles_s",
        "compiled_tiles_s",
        "preprocess_tiles_s",
        "import_rss_mb",
        "peak_rss_mb",
    ]
    print_table(rows, columns)
    path = write_json(
        "embedders",
        {"batch": args.batch, "tile_px": args.tile_px, "repeat": repeat, "rows": rows},
        args.out,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
