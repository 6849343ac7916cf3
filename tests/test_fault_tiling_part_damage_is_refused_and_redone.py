"""A damaged tiling part is never read as tiles: reads raise, verify finds it, a rerun redoes it.

Each test copies one cleanly tiled project (the real CMU slide, 128 px tiles in
shards of 32) and deletes, truncates or flips one file.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slideflow_core.store import StoreCorruptError, StoreError, part_state, read_store_attrs
from slideflow_core.verify import repair, verify
from tiling import TilingConfig, open_store, tile_cohort

pytestmark = pytest.mark.fault

CONFIG = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=32, band_tiles=64)
SHARD = "tiles/c/2/0/0/0"  # tiles 64-95


def _tile(manifest: Path, project: Path, **kwargs):
    report = tile_cohort(manifest, project, CONFIG, executor="local", progress=False, **kwargs)
    (outcome,) = report.results
    return outcome


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, cmu_svs):
    path = tmp_path_factory.mktemp("cohort") / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory, manifest):
    project = tmp_path_factory.mktemp("clean")
    assert _tile(manifest, project).status == "done"
    return project


@pytest.fixture
def project(clean, tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(clean, copy)
    return copy


def _store(project: Path) -> Path:
    return project / "stores" / "cmu.zarr"


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


def _assert_same_as_clean(project: Path, clean: Path) -> None:
    a, b = open_store(_store(project)), open_store(_store(clean))
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.dask().compute(), b.dask().compute())
    pd.testing.assert_frame_equal(a.qc(), b.qc())
    assert verify(_store(project), deep=True).ok


def test_a_clean_store_records_every_file_it_wrote(clean):
    store = _store(clean)
    info = read_store_attrs(store)["parts"]["tiling"]
    files = info["manifest"]["files"]
    assert info["manifest"]["algorithm"] == "crc32"
    on_disk = {
        p.relative_to(store).as_posix()
        for p in store.rglob("*")
        if p.is_file() and p.relative_to(store).as_posix() != "zarr.json"
    }
    assert set(files) == on_disk
    assert SHARD in files and "tiles/zarr.json" in files and "coords/c/0/0" in files
    assert all(size == (store / key).stat().st_size for key, (size, _) in files.items())
    report = verify(store, deep=True)
    assert report.ok and [p.status for p in report.parts] == ["ok"]


@pytest.mark.parametrize("damage", [_delete, _truncate], ids=["deleted", "truncated"])
def test_a_missing_or_truncated_shard_is_refused_found_and_redone(damage, project, clean, manifest):
    store = _store(project)
    damage(store / SHARD)
    with pytest.raises(StoreCorruptError) as raised:
        open_store(store).read_tiles(range(64, 96))
    error = raised.value
    assert (error.store, error.part, error.chunk) == (str(store), "tiling", SHARD)
    assert str(store) in str(error) and SHARD in str(error) and "tiling" in str(error)

    report = verify(store)
    assert [(p.part, p.status) for p in report.broken] == [("tiling", "corrupt")]
    assert SHARD in report.lines()[0]
    assert part_state(store, "tiling", CONFIG.identity()) == "corrupt"

    assert _tile(manifest, project).status == "done"  # redone, not skipped
    _assert_same_as_clean(project, clean)


def test_a_flipped_bit_fails_the_read_and_deep_verify_and_repair_redoes_it(
    project, clean, manifest
):
    store = _store(project)
    _flip(store / SHARD)
    tiles = open_store(store)  # sizes are right: the cheap check passes
    tiles.read_tiles(range(32))  # other shards still read
    with pytest.raises(StoreCorruptError) as raised:
        tiles.read_tiles(range(64, 96))
    assert raised.value.chunk == SHARD and raised.value.part == "tiling"
    with pytest.raises(StoreCorruptError, match=SHARD):
        tiles.dask().compute()

    assert verify(store).ok  # presence and sizes only
    deep = verify(store, deep=True)
    assert [p.problems.wrong_checksum for p in deep.broken] == [(SHARD,)]
    assert repair(deep) == ("tiling",)
    assert part_state(store, "tiling", CONFIG.identity()) == "missing"

    assert _tile(manifest, project).status == "done"
    _assert_same_as_clean(project, clean)


@pytest.mark.parametrize(
    ("key", "read"),
    [
        ("coords/c/0/0", lambda tiles: tiles.coords),
        ("qc/blur/c/0", lambda tiles: tiles.qc()),
        ("qc/keep/zarr.json", lambda tiles: tiles.qc()),
    ],
    ids=["coords", "qc-chunk", "qc-metadata"],
)
def test_every_array_of_the_part_is_checked(key, read, project):
    store = _store(project)
    _flip(store / key)
    with pytest.raises(StoreCorruptError) as raised:
        read(open_store(store))
    assert raised.value.chunk == key
    _truncate(store / key)
    with pytest.raises(StoreCorruptError, match=re.escape(key)):
        open_store(store)


def test_a_damaged_root_zarr_json_names_the_file_and_overwrite_recovers(project, clean, manifest):
    store = _store(project)
    root = store / "zarr.json"
    root.write_bytes(root.read_bytes()[:40])
    with pytest.raises(StoreCorruptError, match=r"zarr\.json is damaged") as raised:
        read_store_attrs(store)
    assert raised.value.chunk == "zarr.json" and str(root) in str(raised.value)
    with pytest.raises(StoreCorruptError):
        open_store(store)
    assert part_state(store, "tiling", CONFIG.identity()) == "corrupt"
    report = verify(store)
    assert not report.ok and "zarr.json" in report.lines()[0]

    assert _tile(manifest, project, overwrite=True).status == "done"
    _assert_same_as_clean(project, clean)


def test_a_root_zarr_json_of_binary_garbage_is_redone_without_overwrite(project, clean, manifest):
    store = _store(project)
    (store / "zarr.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(StoreCorruptError, match=r"zarr\.json"):
        read_store_attrs(store)
    assert _tile(manifest, project).status == "done"
    _assert_same_as_clean(project, clean)


def test_overwrite_recovers_a_store_that_is_not_even_a_folder(project, clean, manifest):
    store = _store(project)
    shutil.rmtree(store)
    store.write_text("not a store")
    with pytest.raises(StoreError):
        open_store(store)
    assert _tile(manifest, project, overwrite=True).status == "done"
    _assert_same_as_clean(project, clean)
