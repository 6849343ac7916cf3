"""Damaged features, redone by the real embed stage, equal a clean run.

A deleted or truncated chunk is caught by the cheap check, so a plain rerun of the
embed stage redoes the part; a flipped bit is caught only by ``sfc verify --deep``,
whose ``--repair`` redoes the part with the embed stage itself. Either way the
redone features equal the clean ones, and nothing else is recomputed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedders import embed_cohort
from slideflow_core.features import read_features
from slideflow_core.store import read_store_attrs
from tiling import TilingConfig, tile_cohort

pytestmark = pytest.mark.fault

SFC = Path(sys.executable).with_name("sfc")


@pytest.fixture(scope="module")
def clean(tmp_path_factory, cmu_svs):
    root = tmp_path_factory.mktemp("features-fault")
    manifest = root / "manifest.csv"
    rows = [{"slide_id": s, "path": str(cmu_svs)} for s in ("a", "b")]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    project = root / "clean"
    tile_cohort(manifest, project, TilingConfig(mpp=0.5, tile_px=128), executor="local",
                progress=False)  # fmt: skip
    assert embed_cohort(project, "handcrafted", executor="local", progress=False).ok
    return project


def _chunk(project: Path) -> Path:
    chunks = sorted((project / "stores" / "a.zarr" / "features" / "handcrafted").rglob("c/*"))
    return next(c for c in chunks if c.is_file())


def _damage(project: Path, how: str) -> None:
    chunk = _chunk(project)
    if how == "deleted":
        chunk.unlink()
    elif how == "truncated":
        chunk.write_bytes(chunk.read_bytes()[:-5])
    else:
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x10
        chunk.write_bytes(bytes(data))


def _assert_clean(project: Path, clean: Path, untouched: dict) -> None:
    np.testing.assert_array_equal(
        read_features(project / "stores" / "a.zarr", "handcrafted").features,
        read_features(clean / "stores" / "a.zarr", "handcrafted").features,
    )
    after = read_store_attrs(project / "stores" / "b.zarr")["parts"]["features/handcrafted"]
    assert after == untouched
    again = subprocess.run([str(SFC), "verify", str(project), "--deep"], capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr


def _b_features(project: Path) -> dict:
    return read_store_attrs(project / "stores" / "b.zarr")["parts"]["features/handcrafted"]


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_an_embed_rerun_redoes_what_the_cheap_check_finds(clean, tmp_path, how):
    project = tmp_path / "project"
    shutil.copytree(clean, project)
    _damage(project, how)
    untouched = _b_features(project)

    report = embed_cohort(project, "handcrafted", executor="local", progress=False)

    assert {r.slide_id: r.status for r in report.results} == {"a": "done", "b": "skipped"}
    _assert_clean(project, clean, untouched)


def test_flipped_features_are_redone_by_sfc_verify_deep_repair(clean, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(clean, project)
    _damage(project, "flipped")
    untouched = _b_features(project)
    rerun = embed_cohort(project, "handcrafted", executor="local", progress=False)
    assert {r.status for r in rerun.results} == {"skipped"}  # sizes are right: a rerun trusts it

    verified = subprocess.run(
        [str(SFC), "verify", str(project), "--deep", "--repair"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "a.zarr: part features/handcrafted: checksum mismatch" in verified.stdout
    assert "redid features/handcrafted with the embed stage: 1 done" in verified.stdout
    assert "Traceback" not in verified.stderr
    _assert_clean(project, clean, untouched)
