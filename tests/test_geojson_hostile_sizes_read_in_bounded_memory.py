"""Big GeoJSON imports stream: memory holds one feature's text and the polygons, never the file.

A QuPath-style FeatureCollection of many small annotation polygons (the
250k-polygon, ~59 MB file of issue 16 in the slow test) is read in a fresh
interpreter whose peak RSS is counted from after the imports.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

READ = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from slideflow_core.geojson import read_roi
    from slideflow_core.geojson.parse import iter_raw_features

    def status_mb(field):
        text = Path("/proc/self/status").read_text()
        return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) / 1024

    Path("/proc/self/clear_refs").write_text("5")  # peak RSS counted from here, imports done
    before = status_mb("VmRSS")
    path = Path(sys.argv[2])
    if sys.argv[1] == "stream":
        n = sum(1 for _ in iter_raw_features(path))
    else:
        n = len(read_roi(path).geoms)
    print(json.dumps({"n": n, "growth_mb": status_mb("VmHWM") - before}))
    """
)


def write_polygons(path: Path, n: int) -> None:
    """``n`` pentagon annotations with QuPath ids, scattered over a 100k px square."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"type":"FeatureCollection","features":[\n')
        for i in range(n):
            x, y, r = rng.uniform(0, 1e5), rng.uniform(0, 1e5), rng.uniform(5, 40)
            ring = [
                (x + r * math.cos(k * 2 * math.pi / 5), y + r * math.sin(k * 2 * math.pi / 5))
                for k in (0, 1, 2, 3, 4, 0)
            ]
            feature = {
                "type": "Feature",
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[round(a), round(b)] for a, b in ring]],
                },
                "properties": {"objectType": "annotation"},
            }
            handle.write(
                json.dumps(feature, separators=(",", ":")) + (",\n" if i < n - 1 else "\n")
            )
        handle.write("]}\n")


def read_in_subprocess(mode: str, path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", READ, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def polygons_50k(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "50k.geojson"
    write_polygons(path, 50_000)
    return path


def test_streaming_holds_one_chunk_of_text_whatever_the_file_size(polygons_50k):
    stats = read_in_subprocess("stream", polygons_50k)
    assert stats["n"] == 50_000
    # Two 1 MB text buffers (4 bytes a character at worst) and one decoded feature: about
    # 5 MB measured, for this 12 MB file as for a 59 MB one.
    assert stats["growth_mb"] < 25, stats


def test_a_roi_of_50k_polygons_holds_the_polygons_not_the_file(polygons_50k):
    stats = read_in_subprocess("roi", polygons_50k)
    assert stats["n"] > 45_000  # a few overlap and merge
    # ~430 bytes a kept polygon, plus the output MultiPolygon's copy: 44 MB measured; the
    # former json.load + union_all read took 290 MB here.
    assert stats["growth_mb"] < 80, stats


@pytest.mark.slow
def test_the_issue_file_of_250k_polygons_stays_under_350_mb(tmp_path):
    path = tmp_path / "250k.geojson"
    write_polygons(path, 250_000)
    assert path.stat().st_size > 55e6
    stats = read_in_subprocess("roi", path)
    assert stats["n"] > 225_000
    assert stats["growth_mb"] < 350, stats  # 217 MB measured; json.load + union_all: 1.43 GB
