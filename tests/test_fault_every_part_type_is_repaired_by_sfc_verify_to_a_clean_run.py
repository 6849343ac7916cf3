"""Damage to every part type, repaired by ``sfc verify --deep --repair`` alone, equals a clean run.

A clean project (seven synthetic slides tiled, embedded, segmented, predicted by a
tiny MIL run trained elsewhere, and exported) is damaged every way at once: a tile
shard of three slides deleted, truncated or bit-flipped (so those stores are tiled
again and every part after them redone); a file of the features, cells, attention
and exported GeoJSON of three others deleted, truncated or bit-flipped (each part
redone alone); and the root ``zarr.json`` of the last truncated (rebuilt from the
copy of its attributes kept beside it). Every read of a damaged part fails instead
of returning fill values; then one fresh ``sfc verify --deep --repair`` process
redoes exactly those, and every array, table and file equals the clean run's.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from slideflow_core.errors import SlideflowError
from slideflow_core.features import read_attention, read_features
from slideflow_core.geojson import export_store
from slideflow_core.geojson.cells import store_cell_table
from slideflow_core.repair import verify_project
from slideflow_core.store import read_store_attrs
from tiling.view import open_store

pytestmark = pytest.mark.fault

SFC = Path(sys.executable).with_name("sfc")
SLIDES = tuple(f"synth-{i:03d}" for i in range(7))
HOW = ("delete", "truncate", "flip")
#: Slides whose tile shard is damaged, and slides whose every other part is, one way each.
RETILED = dict(zip(HOW, SLIDES[:3], strict=True))
PARTS = dict(zip(HOW, SLIDES[3:6], strict=True))
ROOT = SLIDES[6]
RUN = "pred"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    import torch

    import mil
    from embedders import embed_cohort
    from embedders.dense import segment_cohort
    from slideflow_core.cohort import Cohort
    from slideflow_core.geojson.stage import ExportConfig, ExportStage
    from slideflow_core.stages import run_cohort
    from slideflow_core.synthetic import SyntheticSlideSpec
    from slideflow_core.synthetic.cohort import write_tumour_cohort
    from tiling import TilingConfig, tile_cohort

    root = tmp_path_factory.mktemp("every-part")
    spec = SyntheticSlideSpec(
        width_px=1280, height_px=1280, mpp=0.5, n_pen_marks=0, n_blur_regions=0,
        associated_images=False, tumour_radius_um=(100.0, 150.0),
    )  # fmt: skip
    manifest = write_tumour_cohort(root / "cohort", len(SLIDES), spec=spec, seed=3).manifest
    project = root / "project"
    options = {"executor": "local", "progress": False}
    assert tile_cohort(manifest, project, TilingConfig(mpp=1.0, tile_px=128), **options).ok
    assert embed_cohort(project, "handcrafted", **options).ok
    assert segment_cohort(project, "classical", **options).ok
    training = root / "training"  # trained apart: its out-of-fold attention stays there
    shutil.copytree(project, training)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mil.Experiment(
            Cohort.from_manifest(manifest),
            project=training,
            features="handcrafted",
            label="label",
            model="abmil",
            model_kwargs={"hidden_dim": 16},
            splits=mil.KFold(k=2),
            train=mil.TrainConfig(epochs=3, patience=None, batch_size=2, standardize=True),
            name="tumour",
            heatmaps=0,
        ).run()
    finally:
        torch.set_num_threads(threads)
    run = training / "runs" / "tumour"
    assert mil.predict_cohort(run, project, manifest, name=RUN, **options).ok
    assert run_cohort(ExportStage(ExportConfig(run=RUN)), project, **options).ok
    return project


def _store(project: Path, slide_id: str) -> Path:
    return project / "stores" / f"{slide_id}.zarr"


def _first_chunk(folder: Path) -> Path:
    return next(p for p in sorted((folder / "c").rglob("*")) if p.is_file())


def _targets(project: Path, how: str) -> dict[str, Path]:
    """One file of every part type, to damage ``how``."""
    store = _store(project, PARTS[how])
    return {
        "tiles": _first_chunk(_store(project, RETILED[how]) / "tiles"),
        "features": _first_chunk(store / "features" / "handcrafted" / "features"),
        "cells": _cell_table(store),
        "attention": _first_chunk(store / "attention" / RUN / "scores"),
        "exports": project / "exports" / f"{PARTS[how]}.geojson.gz",
    }


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


def _reads(project: Path, how: str) -> dict[str, object]:
    """Every read of the damaged parts; each must raise, never return data."""
    store = _store(project, PARTS[how])
    return {
        "tiles": lambda: open_store(_store(project, RETILED[how])).read_tiles(slice(None)),
        "features": lambda: read_features(store, "handcrafted"),
        "cells": lambda: export_store(store, project / "cells.geojson", what=("cells",)),
        "attention": lambda: read_attention(store, RUN),
        "root": lambda: read_features(_store(project, ROOT), "handcrafted"),
    }


def _cell_table(store: Path) -> Path:
    return store_cell_table(store, read_store_attrs(store))


def _sfc(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SFC), *argv], capture_output=True, text=True, timeout=300, check=False
    )


def _assert_same_json(got, want, where: str) -> None:
    """Equal documents; numbers equal to float32 rounding (the attention scores)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _assert_same_json(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_same_json(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5), where
    else:
        assert got == want, where


def _assert_equal_to_clean(project: Path, clean: Path) -> None:
    for slide_id in SLIDES:
        got, want = _store(project, slide_id), _store(clean, slide_id)
        a, b = zarr.open_group(str(got), mode="r"), zarr.open_group(str(want), mode="r")
        for name in ("tiles", "coords", "qc/keep"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=f"{slide_id} {name}")
        np.testing.assert_array_equal(
            read_features(got, "handcrafted").features, read_features(want, "handcrafted").features
        )
        tables = [pd.read_parquet(_cell_table(store)) for store in (got, want)]
        pd.testing.assert_frame_equal(*tables)
        # Equal to float32 rounding: the repair predicts in this process, the clean run
        # on Ray tasks, and torch sums in another order with another thread count.
        np.testing.assert_allclose(
            read_attention(got, RUN).scores, read_attention(want, RUN).scores, rtol=1e-5
        )
        parts = read_store_attrs(got)["parts"]
        assert set(parts) == set(read_store_attrs(want)["parts"])
        assert all(info["complete"] for info in parts.values())
        name = f"exports/{slide_id}.geojson.gz"
        with gzip.open(project / name) as mine, gzip.open(clean / name) as theirs:
            _assert_same_json(json.load(mine), json.load(theirs), name)
    table = f"predictions/{RUN}.csv"
    tables = [
        pd.read_csv(p / table).sort_values("slide_id", ignore_index=True) for p in (project, clean)
    ]
    pd.testing.assert_frame_equal(*tables)  # rows of slides predicted again come last


def test_one_repair_process_redoes_every_damaged_part_to_the_clean_run(clean, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(clean, project)
    for how in HOW:
        for path in _targets(project, how).values():
            _damage(path, how)
    root = _store(project, ROOT) / "zarr.json"
    root.write_text(root.read_text()[:100])
    for how in HOW:
        for read in _reads(project, how).values():
            with pytest.raises(SlideflowError):
                read()
    untouched = read_store_attrs(_store(project, PARTS["delete"]))["parts"]["tiling"]

    repaired = _sfc("verify", str(project), "--deep", "--repair")

    out = repaired.stdout
    assert repaired.returncode == 0, out + repaired.stderr
    assert "Traceback" not in repaired.stderr
    for how in HOW:
        for part in ("tiling", "features/handcrafted", "cells/classical", f"attention/{RUN}"):
            slide = RETILED[how] if part == "tiling" else PARTS[how]
            assert f"{slide}.zarr: part {part}:" in out
        assert f"{PARTS[how]}.export.json: part exports:" in out
    assert f"{ROOT}.zarr/zarr.json is damaged" in out
    # Every affected slide redone exactly once, stage after stage, and no other.
    assert out.splitlines()[-6:] == [
        "redid tiling with the tile stage: 4 done",
        "redid features/handcrafted with the embed stage: 7 done",
        "redid cells, cells/classical with the segment stage: 7 done",
        f"redid attention/{RUN} with the predict stage: 7 done",
        "redid exports with the export stage: 7 done",
        "after the repair: 7 stores checked, everything verifies",
    ]
    leftovers = [p.name for p in (project / "stores").iterdir() if ".partial" in p.name]
    assert not leftovers + [p.name for p in (project / "stores").glob(".*.old-*")]
    # Exactly the damaged parts: a slide whose tiles were fine was not tiled again.
    assert read_store_attrs(_store(project, PARTS["delete"]))["parts"]["tiling"] == untouched
    _assert_equal_to_clean(project, clean)
    assert all(report.ok for report in verify_project(project, deep=True))
