"""benchmarks/cells.py scores every segmenter on a folder named the way MoNuSeg names tiles.

MoNuSeg's own names (``TCGA-69-7764-01A-01-TS1.png``) carry no ``source_`` prefix, so
every tile is its own source: the folds fall back to k-fold by tile, and the benchmark
trains the learned segmenter on one fold and scores it on the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedders.dense import AnnotationError, read_annotated_folder, tile_folds, tuning_split

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "cells.py"
SHIPPED = {
    "monuseg_TCGA-21-5784-01Z-00-DX1": "TCGA-21-5784-01Z-00-DX1",
    "monuseg_TCGA-2Z-A9J9-01A-01-TS1": "TCGA-2Z-A9J9-01A-01-TS1",
    "cpm15_image01": "image01",
    "cpm15_image08": "image08",
}


def _run_benchmark(data: Path, tmp_path: Path, *options: str) -> tuple[str, dict[str, dict]]:
    """Run the benchmark as a fresh process on ``data``; its stdout and accuracy rows by name."""
    out = tmp_path / "cells.json"
    command = [sys.executable, str(BENCHMARK), "--data", str(data), "--skip-slide", *options]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["segmenter"]: r for r in json.loads(out.read_text())["accuracy"]}
    return done.stdout, rows


@pytest.fixture(scope="module")
def monuseg_named(shared_data, tmp_path_factory):
    """Crops of four shipped tiles, renamed the MoNuSeg way, with a manifest of µm/px."""
    folder = tmp_path_factory.mktemp("monuseg-named")
    tiles = read_annotated_folder(shared_data / "nuclei", ids=list(SHIPPED))
    manifest = []
    for tile in tiles:
        side = round(64 / tile.mpp)  # 64 µm
        name = SHIPPED[tile.id]
        Image.fromarray(tile.image[:side, :side]).save(folder / f"{name}.png")
        instances = tile.instances[:side, :side].astype(np.uint16)
        Image.fromarray(instances).save(folder / f"{name}.inst.png")
        manifest.append({"id": name, "mpp": tile.mpp})
    (folder / "manifest.json").write_text(json.dumps({"tiles": manifest}))
    return folder


def test_monuseg_names_fall_back_to_k_fold_by_tile():
    ids = ["TCGA-69-7764-01A-01-TS1", "TCGA-21-5784-01Z-00-DX1", "TCGA-2Z-A9J9-01A-01-TS1"]
    folds = tile_folds(ids, 2)
    assert sorted(folds[0] + folds[1]) == sorted(ids) and all(folds)
    _, held_out = tuning_split(ids)
    assert held_out, "every tile its own source must still leave held-out tiles"


def test_tiles_of_one_source_never_all_land_in_one_fold():
    ids = [f"cpm15_image{i:02d}" for i in range(6)] + ["odd.name with space"]
    folds = tile_folds(ids, 3)
    assert [len(f) for f in folds] == [3, 2, 2]
    assert all(any(i.startswith("cpm15") for i in f) for f in folds)


def test_fewer_tiles_than_folds_is_one_clear_error():
    with pytest.raises(AnnotationError, match="cannot be split into 3 folds"):
        tile_folds(["a", "b"], 3)


@pytest.mark.slow  # a subprocess importing torch and training twice: ~70 s on a busy machine
def test_the_benchmark_scores_every_segmenter_on_the_renamed_folder(monuseg_named, tmp_path):
    _, rows = _run_benchmark(monuseg_named, tmp_path, "--steps", "2", "--threads", "1")
    assert {"otsu", "classical", "classical, no gate", "learned", "learned, no gate"} <= set(rows)
    for row in rows.values():
        assert row["tiles"] == 4
        assert {"dice", "aji", "pq", "f1", "precision", "recall", "false_per_mm2"} <= set(row)
        assert row["s/tile"] > 0 and row["s/Mpx"] > 0 and row["cpu s/Mpx"] > 0
    assert rows["learned"]["train s"] > 0 and "fold 2/2" in rows["learned"]["note"]
    assert rows["classical"]["dice"] > 0.5


def test_the_benchmark_scores_only_the_segmenters_asked_for(monuseg_named, tmp_path):
    """``--segmenters classical`` scores the classical rows on the held-out fold, trains nothing."""
    stdout, rows = _run_benchmark(
        monuseg_named, tmp_path, "--eval-folds", "2", "--segmenters", "classical"
    )
    assert set(rows) == {"classical", "classical, no gate"}
    _, held_out = tuning_split(list(SHIPPED.values()))
    assert all(row["tiles"] == len(held_out) for row in rows.values())
    assert "learned" not in stdout
