"""A crashed run never leaves a store that looks complete; reruns redo only what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.store import StoreError, part_state, partial_path
from tiling import TilingConfig, open_store, tile_slide
from tiling.job import SlideTask, commit_slide, plan_slide, tile_band

CONFIG = TilingConfig(mpp=0.499, tile_px=128, shard_tiles=16, band_tiles=64)


def test_an_interrupted_slide_is_not_a_store_and_a_rerun_finishes_it(cmu_svs, tmp_path):
    store = tmp_path / "cmu.zarr"
    task = SlideTask("cmu", str(cmu_svs), str(store), CONFIG)
    plan = plan_slide(task)
    assert len(plan.bands) > 2
    tile_band(plan, *plan.bands[0])  # ... and then the worker dies
    assert not store.exists()
    assert partial_path(store).exists()
    assert part_state(store, "tiling", CONFIG.identity()) == "missing"
    with pytest.raises(StoreError, match="no slide store"):
        open_store(store)

    result = tile_slide(cmu_svs, store, CONFIG, slide_id="cmu")
    assert result.status == "done"
    assert not partial_path(store).exists()
    tiles = open_store(store)
    assert len(tiles) == plan.n_tiles
    assert not tiles.qc()["blur"].isna().any()  # every tile written


def test_bands_written_separately_equal_a_single_pass(cmu_svs, tmp_path):
    banded, single = tmp_path / "banded.zarr", tmp_path / "single.zarr"
    task = SlideTask("cmu", str(cmu_svs), str(banded), CONFIG)
    plan = plan_slide(task)
    results = [tile_band(plan, *band) for band in reversed(plan.bands)]  # any order
    commit_slide(plan, results)
    tile_slide(cmu_svs, single, TilingConfig(mpp=0.499, tile_px=128, shard_tiles=16))
    a, b = open_store(banded), open_store(single)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.dask().compute(), b.dask().compute())


def test_a_complete_compatible_store_is_skipped(cmu_svs, tmp_path):
    store = tmp_path / "cmu.zarr"
    assert tile_slide(cmu_svs, store, CONFIG).status == "done"
    before = (store / "zarr.json").stat().st_mtime_ns
    # read_method and band_tiles change how, not what: still compatible.
    again = tile_slide(cmu_svs, store, TilingConfig(**{**CONFIG.__dict__, "band_tiles": 128}))
    assert again.status == "skipped"
    assert (store / "zarr.json").stat().st_mtime_ns == before


def test_an_incompatible_store_is_an_error_unless_overwritten(cmu_svs, tmp_path):
    store = tmp_path / "cmu.zarr"
    tile_slide(cmu_svs, store, CONFIG)
    other = TilingConfig(mpp=1.0, tile_px=128, shard_tiles=16)
    with pytest.raises(StoreError, match="different configuration") as info:
        tile_slide(cmu_svs, store, other)
    assert "overwrite" in info.value.hint
    assert tile_slide(cmu_svs, store, other, overwrite=True).status == "done"
    assert open_store(store).info["mpp_requested"] == 1.0
    assert not list(tmp_path.glob(".cmu.zarr.old-*"))


def test_a_retried_commit_after_the_rename_reports_done(cmu_svs, tmp_path):
    store = tmp_path / "cmu.zarr"
    plan = plan_slide(SlideTask("cmu", str(cmu_svs), str(store), CONFIG))
    bands = [tile_band(plan, *band) for band in plan.bands]
    first = commit_slide(plan, bands)
    again = commit_slide(plan, bands)  # Ray retries a task whose worker died after the rename
    assert first.status == again.status == "done"
    assert again.n_tiles == first.n_tiles
    assert part_state(store, "tiling", CONFIG.identity()) == "complete"
