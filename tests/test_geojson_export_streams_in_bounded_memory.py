"""Exports stream: memory holds the per-tile columns and one batch of text, never the file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from overlay_stores import make_store

# Runs in a fresh interpreter so the peak RSS belongs to the export alone.
EXPORT = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from slideflow_core.geojson import export_store

    def status_mb(field):
        text = Path("/proc/self/status").read_text()
        return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) / 1024

    Path("/proc/self/clear_refs").write_text("5")  # peak RSS counted from here, imports done
    before = status_mb("VmRSS")
    summary = export_store(sys.argv[1], sys.argv[2], run="r1", what=("tiles",))
    growth = status_mb("VmHWM") - before
    print(json.dumps({"n": summary.total, "growth_mb": growth, "s": summary.seconds}))
    """
)


def export_in_subprocess(store, out):
    result = subprocess.run(
        [sys.executable, "-c", EXPORT, str(store), str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def count_features(path):
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.startswith('{"type":"Feature"'))


def test_60k_tiles_export_holds_columns_and_one_batch_not_the_file(tmp_path):
    store = make_store(tmp_path, grid=(300, 200), dimensions=(76_800, 51_200))
    out = tmp_path / "tiles.geojson"
    stats = export_in_subprocess(store, out)
    assert stats["n"] == 60_000 == count_features(out)
    # Memory holds the per-tile columns (coordinates, QC, scores: ~60 bytes a tile), at most
    # three batches of text (encoding, queued, being written) and the libraries' first-use
    # buffers, about 40 MB whatever the number of tiles; a naive in-memory FeatureCollection
    # takes about 5 times the file's size (benchmarks/geojson_export.py).
    assert stats["growth_mb"] < 60, stats
    head = '{"type":"FeatureCollection","features":[\n{"type":"Feature"'
    with open(out, encoding="utf-8") as handle:
        assert handle.read(len(head)) == head


@pytest.mark.slow
def test_a_million_tiles_export_under_200_mb(tmp_path):
    store = make_store(tmp_path, grid=(1000, 1000), dimensions=(256_000, 256_000))
    out = tmp_path / "tiles.geojson.gz"
    stats = export_in_subprocess(store, out)
    assert stats["n"] == 1_000_000
    assert stats["growth_mb"] < 200, stats
