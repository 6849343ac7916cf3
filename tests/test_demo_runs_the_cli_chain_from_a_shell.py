"""``make demo`` stays green: the demo runs as a user would, each ``sfc`` step a fresh process.

Its outputs are checked, not only its exit code: the MIL run, the predictions of every
slide with tissue, the overlays and the attention's localisation of the tumours.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_runs_every_stage_through_the_cli(tmp_path, slides_dir):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--out", str(out), "--samples", str(slides_dir)],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    (tmp_path / "demo.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "Traceback" not in done.stdout + done.stderr
    for step in ("$ sfc run", "$ sfc mil train", "$ sfc mil report"):
        assert step in done.stdout, step
    assert "mean tile AUROC" in done.stdout  # attention scored against the tumour outlines

    report = json.loads((out / "pipeline" / "report.json").read_text())
    assert report["ok"]
    assert [s["stage"] for s in report["stages"]] == [
        "tile", "embed", "segment", "predict", "export"
    ]  # fmt: skip
    predictions = pd.read_csv(out / "predictions" / "abmil-all.csv")
    synthetic = predictions[predictions["slide_id"].str.startswith("synth-")]
    assert len(synthetic) == 12 and synthetic["prob_tumour"].between(0, 1).all()
    tumour = synthetic["label"] == "tumour"
    assert synthetic[tumour]["prob_tumour"].mean() > synthetic[~tumour]["prob_tumour"].mean()
    for slide_id in predictions["slide_id"]:
        with gzip.open(out / "exports" / f"{slide_id}.geojson.gz", "rt") as f:
            assert json.load(f)["features"], slide_id
    assert (out / "runs" / "demo-abmil" / "report.html").is_file()
