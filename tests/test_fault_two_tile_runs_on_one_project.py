"""Two ``sfc tile`` runs on one project at once: the second exits at once with one clear
line, the first finishes every slide, and the stores and status files agree.

Both are fresh processes of the installed ``sfc`` working in-process (no Ray), so the
test is about the project's lock, not about Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from slideflow_core.store import part_state
from tiling import TilingConfig

pytestmark = pytest.mark.fault

SFC = Path(sys.executable).with_name("sfc")


def test_a_second_concurrent_tile_run_is_refused_and_the_first_completes(synthetic_slide, tmp_path):
    slide, _ = synthetic_slide
    ids = [f"s{i:02d}" for i in range(16)]  # enough work that the first run is still going
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"slide_id": ids, "path": [str(slide)] * len(ids)}).to_csv(manifest, index=False)
    project = tmp_path / "project"
    command = [str(SFC), "tile", str(manifest), "--out", str(project), "--target-mpp", "0.5",
               "--tile-px", "64", "--no-progress", "--executor", "local"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = project / "status" / "tile"
    deadline = time.monotonic() + 120
    while not (status.is_dir() and any(status.glob("*.json"))):  # the first run is working
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run finished no slide"
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second started"

    second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    out, err = first.communicate(timeout=600)

    assert second.returncode == 1, second.stdout + second.stderr
    assert second.stderr.splitlines()[0].startswith("error: another tile run (pid ")
    assert second.stderr.splitlines()[1].startswith("hint: wait for it to finish")
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, out + err
    config = TilingConfig(mpp=0.5, tile_px=64)
    for slide_id in ids:
        store = project / "stores" / f"{slide_id}.zarr"
        assert part_state(store, "tiling", config.identity()) == "complete", slide_id
        status = json.loads((project / "status" / "tile" / f"{slide_id}.json").read_text())
        assert status["status"] == "done"
    assert not list((project / "stores").glob("*.partial"))
