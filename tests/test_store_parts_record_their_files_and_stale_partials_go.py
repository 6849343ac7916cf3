"""Parts record what they wrote (any file type); stale partial stores are removed when replanned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from slideflow_core.store import (
    StoreCorruptError,
    chunk_keys,
    commit_store,
    mark_part,
    part_state,
    partial_path,
    read_store_attrs,
    start_store,
    unmark_part,
    write_part,
)
from slideflow_core.verify import verify
from tiling import TilingConfig, open_store, tile_cohort
from tiling.job import SlideTask, plan_slide, tile_band


@pytest.fixture
def store(tmp_path):
    final = tmp_path / "s1.zarr"
    commit_store(start_store(final, {"slide_id": "s1"}), final)
    return final


def test_a_part_of_plain_files_is_recorded_and_checked(store):
    with write_part(store, "cells/run", {"identity": {"seg": 1}}) as group:
        pd.DataFrame({"x": np.arange(1000.0)}).to_parquet(f"{group.store.root}/cells.parquet")
    files = read_store_attrs(store)["parts"]["cells/run"]["manifest"]["files"]
    assert set(files) == {"cells/run/cells.parquet", "cells/run/zarr.json"}

    # Marked again with a new description (as the cell stage does): same files, same manifest.
    mark_part(store, "cells/run", {"identity": {"seg": 1}, "n_cells": 1000})
    info = read_store_attrs(store)["parts"]["cells/run"]
    assert info["n_cells"] == 1000 and info["manifest"]["files"] == files

    table = store / "cells" / "run" / "cells.parquet"
    table.write_bytes(table.read_bytes()[:-10])
    assert part_state(store, "cells/run", {"seg": 1}) == "corrupt"
    assert verify(store).lines() == [f"{store}: part cells/run: wrong size cells/run/cells.parquet"]
    unmark_part(store, "cells/run")
    assert "cells/run" not in read_store_attrs(store)["parts"]


def test_any_stage_can_record_files_it_wrote_itself(store):
    (store / "exports").mkdir()
    (store / "exports" / "a.json").write_text("{}")
    mark_part(store, "exports", {"identity": {}}, files=("exports", "absent"))
    assert set(read_store_attrs(store)["parts"]["exports"]["manifest"]["files"]) == {
        "exports/a.json"
    }
    assert part_state(store, "exports", {}) == "complete"
    (store / "exports" / "a.json").unlink()
    assert part_state(store, "exports", {}) == "corrupt"


def test_a_part_without_a_manifest_is_unverified_not_broken(store):
    mark_part(store, "legacy", {"identity": {}})
    assert part_state(store, "legacy", {}) == "complete"
    assert [(p.part, p.status) for p in verify(store, deep=True).parts] == [
        ("legacy", "unverified")
    ]


def test_writers_on_a_damaged_root_raise_store_corrupt_error(store):
    (store / "zarr.json").write_text('{"attributes": {"kind"')
    with pytest.raises(StoreCorruptError, match=r"zarr\.json"):
        mark_part(store, "x", {})
    with pytest.raises(StoreCorruptError, match=r"zarr\.json"), write_part(store, "features/m", {}):
        pass


def test_chunk_keys_name_the_files_a_read_touches(store):
    group = zarr.open_group(str(store), mode="r+")
    sharded = group.create_array(
        "tiles", shape=(100, 4, 4, 3), dtype="uint8", chunks=(1, 4, 4, 3), shards=(32, 4, 4, 3)
    )
    plain = group.create_array("coords", shape=(100, 2), dtype="int64", chunks=(10, 2))
    assert chunk_keys(sharded, "tiles", slice(30, 70)) == [
        "tiles/zarr.json",
        "tiles/c/0/0/0/0",
        "tiles/c/1/0/0/0",
        "tiles/c/2/0/0/0",
    ]
    assert chunk_keys(sharded, "tiles", np.array([99, 5])) == [
        "tiles/zarr.json",
        "tiles/c/0/0/0/0",
        "tiles/c/3/0/0/0",
    ]
    assert chunk_keys(plain, "coords", slice(5, 5)) == ["coords/zarr.json"]
    assert len(chunk_keys(plain, "coords")) == 11


def test_start_store_removes_a_stale_partial_and_leftovers_of_a_commit(tmp_path):
    final = tmp_path / "s1.zarr"
    stale = partial_path(final)
    (stale / "tiles" / "c").mkdir(parents=True)
    (stale / "tiles" / "c" / "junk").write_bytes(b"x")
    (tmp_path / ".s1.zarr.old-1234abcd").mkdir()
    (tmp_path / ".s1.zarr.old-5678abcd").write_text("a file")
    start_store(final, {"slide_id": "s1"})
    assert not (stale / "tiles").exists()
    assert not list(tmp_path.glob(".s1.zarr.old-*"))

    stale_file = partial_path(tmp_path / "s2.zarr")
    stale_file.write_text("a partial that is a file")
    assert start_store(tmp_path / "s2.zarr", {"slide_id": "s2"}).is_dir()


def test_an_interrupted_slide_is_replanned_from_a_clean_partial(cmu_svs, tmp_path):
    config = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=32, band_tiles=64)
    project = tmp_path / "project"
    store = project / "stores" / "cmu.zarr"
    plan = plan_slide(SlideTask("cmu", str(cmu_svs), str(store), config))
    tile_band(plan, *plan.bands[0])  # ... and the run dies
    (partial_path(store) / "stray").write_text("left by the dead run")
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"slide_id": "cmu", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    report = tile_cohort(manifest, project, config, executor="local", progress=False)
    assert report.results[0].status == "done"
    assert not partial_path(store).exists()
    assert not (store / "stray").exists()
    assert len(open_store(store).read_tiles(range(plan.n_tiles))) == plan.n_tiles
    assert verify(store, deep=True).ok
