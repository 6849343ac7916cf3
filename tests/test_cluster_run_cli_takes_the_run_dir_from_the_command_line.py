"""``sfc run --run-dir DIR`` with a pipeline YAML that has no ``run_dir`` (a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

SFC = Path(sys.executable).with_name("sfc")


def test_run_dir_flag_supplies_the_missing_run_dir(cmu_svs, tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"slide_id": "CMU-1", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    config = tmp_path / "pipeline.yaml"
    config.write_text("stages: [tile]\ntile: {mpp: 1.0, tile_px: 128}\n")

    missing = subprocess.run(
        [str(SFC), "run", str(manifest), "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[0] == "error: no run directory"
    assert "--run-dir" in missing.stderr and "Traceback" not in missing.stderr

    run_dir = tmp_path / "run"
    done = subprocess.run(
        [str(SFC), "run", str(manifest), "--config", str(config), "--run-dir", str(run_dir),
         "--num-cpus", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((run_dir / "pipeline" / "report.json").read_text())
    assert report["ok"] and report["stages"][0]["done"] == 1
    assert (run_dir / "status" / "tile" / "CMU-1.json").is_file()
