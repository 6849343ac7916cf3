"""``sfc cells train`` writes weights a fresh ``sfc segment --segmenter learned`` runs on a slide.

Two optimiser steps on crops of a real tile, then the whole-slide band runner on a
small synthetic slide: what is checked is the path a user takes from a shell, not
the model's accuracy (benchmarks/cells.py measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cells_fixtures import sparse_slide
from PIL import Image

from embedders.dense import read_annotated_folder


def _sfc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "slideflow_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def annotated(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotated")
    tile = read_annotated_folder(shared_data / "nuclei", ids=["cpm15_image08"])[0]
    for index, (y, x) in enumerate([(0, 0), (300, 400)]):
        window = (slice(y, y + 128), slice(x, x + 128))
        Image.fromarray(tile.image[window]).save(folder / f"crop {index}.png")
        Image.fromarray(tile.instances[window].astype(np.uint16)).save(
            folder / f"crop {index}.inst.png"
        )
    return folder


def test_train_then_segment_a_slide_with_the_weights(annotated, tmp_path):
    weights = tmp_path / "nuclei.safetensors"
    train = _sfc(
        "cells", "train", str(annotated), "--out", str(weights), "--hold-out",
        "--steps", "2", "--batch-size", "2", "--crop-px", "64", "--threads", "1", "--no-progress",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    summary = json.loads(train.stdout)
    assert summary["steps"] == 2 and "dice" in summary["validation"]
    card = json.loads((tmp_path / "nuclei.card.json").read_text())
    assert card["data"]["validation_tiles"] == ["crop 1"]
    slide, _ = sparse_slide(tmp_path, width_px=1024, height_px=1024)
    table = tmp_path / "cells.parquet"
    segment = _sfc(
        "segment", str(slide), "--segmenter", "learned", "--weights", str(weights),
        "--out", str(table), "--all-tiles", "--tile-px", "512",
    )  # fmt: skip
    assert segment.returncode == 0, segment.stderr[-2000:]
    assert table.is_file()
    provenance = json.loads(table.with_name(table.name + ".json").read_text())
    assert "learned" in json.dumps(provenance) and card["weights_sha256"] in json.dumps(provenance)


def test_missing_or_foreign_weights_are_one_error_with_a_hint(tmp_path, annotated):
    slide, _ = sparse_slide(tmp_path, width_px=512, height_px=512)
    absent = str(tmp_path / "no.safetensors")
    missing = _sfc(
        "segment", str(slide), "--segmenter", "learned", "--weights", absent,
        "--out", str(tmp_path / "c.parquet"),
    )  # fmt: skip
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "not found" in missing.stderr and "sfc cells train" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = _sfc("cells", "train", str(empty), "--out", str(tmp_path / "w.safetensors"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "ID.inst.png" in refused.stderr
