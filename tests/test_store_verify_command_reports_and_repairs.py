"""``sfc verify`` prints every damaged part, exits 1, and ``--repair`` makes reruns redo them."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slideflow_core.features import read_features, write_features
from slideflow_core.store import StoreError, part_state, read_store_attrs
from slideflow_core.verify_cli import register_verify
from tiling import TilingConfig, tile_cohort

CONFIG = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=32, band_tiles=64)
SHARD = "tiles/c/2/0/0/0"
FEATURES = "features/m/features/c/0/0"


def _tile(manifest: Path, project: Path) -> str:
    report = tile_cohort(manifest, project, CONFIG, executor="local", progress=False)
    return report.results[0].status


@pytest.fixture(scope="module")
def clean(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("verify")
    manifest = root / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    project = root / "project"
    assert _tile(manifest, project) == "done"
    store = project / "stores" / "cmu.zarr"
    n = int(read_store_attrs(store)["parts"]["tiling"]["n_tiles"])
    with write_features(
        store,
        "m",
        tile_index=np.arange(n),
        coords=np.zeros((n, 2)),
        dim=4,
        info={"identity": {"model": "m"}},
    ) as writer:
        writer.put(0, np.ones((n, 4)))
    return manifest, project


@pytest.fixture
def project(clean, tmp_path):
    manifest, source = clean
    copy = tmp_path / "project"
    shutil.copytree(source, copy)
    return manifest, copy


def _sfc_verify(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sfc")
    register_verify(parser.add_subparsers())
    args = parser.parse_args(["verify", *argv])
    return args.func(args)


def test_a_clean_project_passes(clean, capsys):
    _, project = clean
    assert _sfc_verify(str(project), "--deep") == 0
    out = capsys.readouterr().out
    assert "checked 1 stores, 2 parts (presence, sizes and checksums): 0 damaged" in out


def test_every_damaged_part_is_one_line_and_repair_redoes_what_it_can(project, capsys):
    _, project = project
    store = project / "stores" / "cmu.zarr"
    shard = store / SHARD
    clean_shard = shard.read_bytes()
    data = bytearray(clean_shard)
    data[len(data) // 2] ^= 0x40
    shard.write_bytes(bytes(data))  # only the deep check sees this
    (store / FEATURES).unlink()

    assert _sfc_verify(str(project)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{store}: part features/m: missing {FEATURES}"
    assert "1 damaged" in lines[1]
    assert lines[2] == f"to redo exactly these parts: sfc verify {project} --repair"

    # One store works too. Tiling again replaces the store, so features/m is redone
    # too; its record holds no config (written by hand here), so it is left to the user.
    assert _sfc_verify(str(store), "--deep", "--repair") == 1
    out = capsys.readouterr().out
    assert f"{store}: part features/m: missing {FEATURES}" in out
    assert f"{store}: part tiling: checksum mismatch {SHARD}" in out
    assert "redid tiling with the tile stage: 1 done" in out
    assert "cmu: features/m: its record holds no config" in out
    assert "sfc embed  (same arguments as before; 1 slide: cmu)" in out
    assert "after the repair: 1 stores checked, everything verifies" in out
    assert shard.read_bytes() == clean_shard  # tiled again, as it was
    assert part_state(store, "tiling", CONFIG.identity()) == "complete"
    assert part_state(store, "features/m", {"model": "m"}) == "missing"
    with pytest.raises(StoreError, match="no complete features/m"):
        read_features(store, "m")
    assert _sfc_verify(str(project), "--deep") == 0


def test_the_installed_command_exits_1_on_damage_and_explains_a_wrong_path(project, tmp_path):
    _, project = project
    (project / "stores" / "cmu.zarr" / SHARD).unlink()
    sfc = Path(sys.executable).with_name("sfc")
    run = subprocess.run([sfc, "verify", str(project)], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert f"part tiling: missing {SHARD}" in run.stdout
    wrong = subprocess.run([sfc, "verify", str(tmp_path)], capture_output=True, text=True)
    assert wrong.returncode != 0
    assert wrong.stderr.startswith("error:") and "hint:" in wrong.stderr
    assert "Traceback" not in wrong.stderr
