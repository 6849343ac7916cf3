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


@pytest.mark.parametrize("codec", ["jpeg", "zstd"])
def test_bands_read_on_several_threads_store_what_one_thread_stores(codec, cmu_svs, tmp_path):
    config = TilingConfig(**{**CONFIG.__dict__, "codec": codec})
    stores = {}
    for threads in (1, 3):
        store = tmp_path / f"t{threads}.zarr"
        plan = plan_slide(SlideTask("cmu", str(cmu_svs), str(store), config))
        commit_slide(plan, [tile_band(plan, *band, threads=threads) for band in plan.bands])
        stores[threads] = open_store(store)
    one, three = stores[1], stores[3]
    assert one.info["codec"] == codec
    np.testing.assert_array_equal(one.dask().compute(), three.dask().compute())
    assert one.qc().equals(three.qc())
    if codec == "jpeg":  # shards we lay out ourselves (zarrs may order lossless ones freely)
        tiles = {t: tmp_path / f"t{t}.zarr" / "tiles" for t in (1, 3)}
        shards = sorted(p.relative_to(tiles[1]) for p in tiles[1].rglob("*") if p.is_file())
        assert len(shards) > 2
        for shard in shards:  # the same encoded bytes, file for file
            assert (tiles[1] / shard).read_bytes() == (tiles[3] / shard).read_bytes()


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
