"""``sfc embed`` on a tiny cohort starts no Ray, and a resumed run that has nothing to do builds
no model: each as a fresh ``sfc`` process, the way a user runs it.

A one-slide project: the first run embeds it in the ``sfc`` process itself (the one CPU
actor's work, with its threads), the second finds the slide done from the part's
recorded request without building the model or starting any worker, and a run asking
for something else (another dtype) still goes to planning, which refuses the part made
differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from embedding_project import CONFIG

from slideflow_core.store import read_store_attrs
from tiling import TilingConfig, tile_slide


def _sfc_embed(project: Path, *extra: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "slideflow_core.cli", "embed", str(project), "--model",
         "handcrafted", "--no-progress", *extra],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads((project / "status" / "embed.json").read_text())
    return done.returncode, report


def test_tiny_cohort_runs_in_process_and_a_finished_resume_builds_nothing(tmp_path, cmu_svs):
    project = tmp_path / "project"
    tile_slide(cmu_svs, project / "stores" / "cmu.zarr", TilingConfig(**CONFIG), slide_id="cmu")

    code, first = _sfc_embed(project)
    assert code == 0
    assert [r["status"] for r in first["results"]] == ["done"]
    assert first["info"]["executor"].startswith("local (")  # the actor's threads, no Ray
    assert first["info"]["model"] == "handcrafted"
    parts = read_store_attrs(project / "stores" / "cmu.zarr")["parts"]
    request = parts["features/handcrafted"]["request"]
    assert request["model"] == "handcrafted" and request["dtype"] == "float16"

    code, again = _sfc_embed(project)
    assert code == 0
    assert [r["status"] for r in again["results"]] == ["skipped"]
    assert again["results"][0]["n_tiles"] == first["results"][0]["n_tiles"]
    assert "model" not in again["info"] and "executor" not in again["info"]  # nothing built

    code, other = _sfc_embed(project, "--dtype", "float32")
    assert code == 1
    assert [r["status"] for r in other["results"]] == ["failed"]
    assert "made differently" in other["results"][0]["error"]
