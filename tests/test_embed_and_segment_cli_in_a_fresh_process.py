"""``sfc embed`` and ``sfc segment`` work from a shell: a fresh interpreter, no package preloading.

``sfc embed --model handcrafted`` once failed with "unknown embedder 'handcrafted';
available: " because the registry was only filled when the package's lazy loader
imported the zoo; the command imports its modules directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from embedding_project import CONFIG

from slideflow_core.features import read_features
from tiling import TilingConfig, tile_slide


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _sfc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    command = [sys.executable, "-m", "slideflow_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def test_registries_are_full_whichever_module_is_imported_first():
    embed = _python(
        "from embedders.registry import get_card, model_names\n"
        "print(get_card('handcrafted').name, len(model_names()))"
    )
    assert embed.returncode == 0, embed.stderr
    name, count = embed.stdout.split()
    assert name == "handcrafted" and int(count) > 10
    cells = _python(
        "from embedders.dense.registry import create_segmenter, segmenter_names\n"
        "print(create_segmenter('classical').name, *segmenter_names())"
    )
    assert cells.returncode == 0, cells.stderr
    assert cells.stdout.split()[:3] == ["classical", "classical", "hovernet-head"]


@pytest.mark.integration
def test_sfc_embed_and_segment_a_tiny_project_from_a_shell(cmu_svs, tmp_path):
    project = tmp_path / "project"
    store = project / "stores" / "cmu.zarr"
    tile_slide(cmu_svs, store, TilingConfig(**CONFIG, store_pixels=False), slide_id="cmu")

    embed = _sfc("embed", str(project), "--model", "handcrafted", "--num-cpus", "1")
    assert embed.returncode == 0, embed.stderr
    assert "unknown embedder" not in embed.stderr
    assert "1 done" in embed.stdout and "features/handcrafted" in embed.stdout
    bag = read_features(store, "handcrafted")
    assert len(bag) > 10 and bag.features.shape[1] == 87
    _assert_status(project, "embed", n_tiles=len(bag))

    segment = _sfc(
        "segment", str(project), "--tile-px", "512", "--target-mpp", "0.5", "--num-cpus", "1"
    )
    assert segment.returncode == 0, segment.stderr
    assert "1 done" in segment.stdout and "cells/classical" in segment.stdout
    status = _assert_status(project, "segment")
    assert status["details"]["n_cells"] > 100


def _assert_status(project: Path, stage: str, **expected: int) -> dict:
    status = json.loads((project / "status" / stage / "cmu.json").read_text())
    assert status["status"] == "done", status
    for key, value in expected.items():
        assert status[key] == value
    return status
