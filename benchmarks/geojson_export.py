"""GeoJSON export: features/s and peak memory for a million tiles and a million cells.

Three ways to write the same overlays, each in a fresh interpreter so its peak
memory is its own:

- **ours**: :func:`slideflow_core.geojson.export_store`, streamed in batches,
  plain and gzipped;
- **naive**: what people write first: build the whole FeatureCollection as
  Python dicts (``shapely.geometry.mapping`` for cells, ``uuid4`` ids), then one
  ``json.dump``; for cells the table is read whole, as that code does;
- **floor**: copying (or gzipping) our output file's bytes with no geometry or
  encoding work: what the disk and zlib cost alone.

Wall time and CPU time (user + system, all threads) are both reported: on a
shared machine the CPU time is the steadier measure of the work done.

Inputs are synthetic: a slide store with ``--tiles`` tiles (QC values and one
MIL run) and a cell table with ``--cells`` nuclei and cell boundaries (17- and
25-point polygons, a class, three measurements).

    python benchmarks/geojson_export.py              # 1,000,000 tiles and cells
    python benchmarks/geojson_export.py --quick      # 100,000 of each
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO

import numpy as np
from _common import peak_rss_mb, print_table, write_json

CHUNK = 50_000
GZIP_LEVEL = 6  # ExportOptions' default


def build_store(root: Path, n_tiles: int, n_cells: int) -> tuple[Path, Path]:
    """A slide store with ``n_tiles`` tiles and one run, and a cell table of ``n_cells``."""
    import shapely
    import zarr

    from slideflow_core.features import write_attention, write_features
    from slideflow_core.geojson import CellTableWriter
    from slideflow_core.store import commit_store, mark_part, start_store

    side = int(np.ceil(np.sqrt(n_tiles)))
    store = root / "stores" / "bench.zarr"
    attrs = {
        "slide_id": "bench",
        "slide": {"path": "bench.svs", "dimensions": [side * 256] * 2, "level_downsamples": [1.0]},
    }
    partial = start_store(store, attrs)
    group = zarr.open_group(str(partial), mode="r+")
    index = np.arange(n_tiles)
    coords = np.stack([index % side * 256, index // side * 256], axis=1).astype(np.int64)
    group.create_array("coords", data=coords)
    rng = np.random.default_rng(0)
    qc = group.require_group("qc")
    for name in ("tissue_fraction", "background_fraction", "blur"):
        qc.create_array(name, data=rng.uniform(0, 1, n_tiles).astype(np.float32))
    qc.create_array("keep", data=rng.uniform(0, 1, n_tiles) > 0.1)
    mark_part(partial, "tiling", {"read_px": 256, "level": 0, "tile_px": 256, "n_tiles": n_tiles})
    commit_store(partial, store)
    with write_features(
        store, "m", tile_index=index, coords=coords, dim=1, info={"identity": {}}
    ) as writer:
        writer.put(0, np.zeros((n_tiles, 1)))
    write_attention(store, "run", rng.uniform(0, 1, n_tiles), model_id="m", info={})

    table = root / "cells.parquet"
    classes = np.array(["Tumor", "Stroma", "Lymphocyte"])
    with CellTableWriter(
        table,
        measurements=["area", "eccentricity", "hematoxylin"],
        with_cells=True,
        with_classes=True,
    ) as out:
        for start in range(0, n_cells, CHUNK):
            n = min(CHUNK, n_cells - start)
            points = shapely.points(rng.uniform(0, side * 256, (n, 2)))
            nuclei = shapely.buffer(points, rng.uniform(3, 7, n), quad_segs=4)
            cells = shapely.buffer(nuclei, 3.0, quad_segs=2)
            out.write(
                nuclei,
                cells=cells,
                classes=classes[rng.integers(0, 3, n)].tolist(),
                measurements={
                    "area": shapely.area(nuclei),
                    "eccentricity": rng.uniform(0, 1, n),
                    "hematoxylin": rng.uniform(0, 1, n),
                },
            )
    return store, table


# -- the methods (each runs in its own interpreter) -----------------------------------
def ours(kind: str, store: Path, table: Path, out: Path) -> int:
    from slideflow_core.geojson import export_store

    if kind == "tiles":
        return export_store(store, out, what=("tiles",), run="run").total
    return export_store(store, out, what=("cells",), cells_table=str(table)).total


def naive(kind: str, store: Path, table: Path, out: Path) -> int:
    import pyarrow.parquet as pq
    import shapely
    import zarr
    from shapely.geometry import mapping

    features = []
    if kind == "tiles":
        group = zarr.open_group(str(store), mode="r")
        coords = group["coords"][:]
        qc = {name: group["qc"][name][:] for name in group["qc"].array_keys()}
        scores = group["attention"]["run"]["scores"][:]
        for i, (x, y) in enumerate(coords.tolist()):
            ring = [[x, y], [x + 256, y], [x + 256, y + 256], [x, y + 256], [x, y]]
            measurements = {name: float(values[i]) for name, values in qc.items()}
            measurements["attention"] = float(scores[i])
            features.append(
                {
                    "type": "Feature",
                    "id": str(uuid.uuid4()),
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {"objectType": "tile", "measurements": measurements},
                }
            )
    else:
        data = pq.read_table(table).to_pydict()
        nuclei = shapely.from_wkb(data.pop("geometry"))
        cells = shapely.from_wkb(data.pop("cell_geometry"))
        classes = data.pop("class")
        for i in range(len(nuclei)):
            features.append(
                {
                    "type": "Feature",
                    "id": str(uuid.uuid4()),
                    "geometry": mapping(cells[i]),
                    "nucleusGeometry": mapping(nuclei[i]),
                    "properties": {
                        "objectType": "cell",
                        "classification": {"name": classes[i], "color": [255, 0, 0]},
                        "measurements": {name: values[i] for name, values in data.items()},
                    },
                }
            )
    with _open_out(out, "wt") as handle:
        json.dump({"type": "FeatureCollection", "features": features}, handle)
    return len(features)


def floor(kind: str, store: Path, table: Path, out: Path) -> int:
    source = out.parent / f"ours-{kind}.geojson"  # the plain file ours wrote
    with open(source, "rb") as src, _open_out(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)
    with open(source, "rb") as handle:  # our files hold one feature per line
        return sum(1 for line in handle if line.startswith(b'{"type":"Feature"'))


def _open_out(path: Path, mode: str) -> IO:
    """The output file; gzip at level 6 like ours (``gzip.open`` defaults to 9)."""
    text = {} if "b" in mode else {"encoding": "utf-8"}
    if path.name.endswith(".gz"):
        return gzip.open(path, mode, compresslevel=GZIP_LEVEL, **text)
    return open(path, mode, **text)


METHODS = {"ours": ours, "naive": naive, "floor": floor}


def _status_mb(field: str) -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else peak_rss_mb()


def worker(args: argparse.Namespace) -> None:
    """Run one method and print its timing and memory as JSON."""
    from slideflow_core.geojson import export_store  # noqa: F401 - imports are not the work

    # Restart the peak-RSS counter here: a forked child inherits its parent's peak, and
    # imports are the same for every method.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    started, cpu = time.perf_counter(), _cpu_seconds()
    n = METHODS[args.method](args.kind, Path(args.store), Path(args.table), Path(args.out))
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    peak = _status_mb("VmHWM")
    stats = {"n": n, "seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak, "rss_before_mb": before}
    print(json.dumps(stats))


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): robust to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(method: str, kind: str, store: Path, table: Path, out: Path) -> dict:
    command = [
        sys.executable, __file__, "--worker", "--method", method, "--kind", kind,
        "--store", str(store), "--table", str(table), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    size = out.stat().st_size / 2**20
    return {
        "layer": kind,
        "method": method,
        "file": out.name.split(".", 1)[1],
        "features": stats["n"],
        "seconds": stats["seconds"],
        "features/s": stats["n"] / stats["seconds"],
        "CPU s": stats["cpu_s"],
        "features/CPU s": stats["n"] / max(stats["cpu_s"], 1e-9),
        "peak RSS MB": stats["peak_rss_mb"],
        "RSS growth MB": stats["peak_rss_mb"] - stats["rss_before_mb"],
        "MB written": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 tiles and cells")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive baseline")
    parser.add_argument("--workdir", help="where inputs and outputs go (default: a temp folder)")
    parser.add_argument(
        "--json", help="results file (default benchmarks/results/geojson_export.json)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("method", "kind", "store", "table", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.tiles = args.cells = 100_000
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        store, table = build_store(root, args.tiles, args.cells)
        took = time.perf_counter() - started
        print(f"inputs: {args.tiles:,} tiles, {args.cells:,} cells ({took:.0f} s)")
        rows = []
        for kind in ("tiles", "cells"):
            plans = [("ours", ".geojson"), ("ours", ".geojson.gz")]
            if not args.skip_naive:
                plans += [("naive", ".geojson"), ("naive", ".geojson.gz")]
            plans += [("floor", ".geojson"), ("floor", ".geojson.gz")]
            for method, suffix in plans:
                rows.append(run(method, kind, store, table, root / f"{method}-{kind}{suffix}"))
                print_table(rows[-1:], list(rows[-1]))
        columns = list(rows[0])
        print()
        print_table(rows, columns)
        path = write_json(
            "geojson_export", {"tiles": args.tiles, "cells": args.cells, "rows": rows}, args.json
        )
        print(f"results: {path}")


if __name__ == "__main__":
    main()
