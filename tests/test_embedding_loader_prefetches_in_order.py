"""The tile loader: batches in order, made on loader threads, at most ``prefetch`` ahead."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from embedding_project import CONFIG

from embedders.loader import iter_batches
from tiling import TilingConfig, open_store, tile_slide


@pytest.fixture(scope="module")
def store(tmp_path_factory, cmu_svs):
    path = tmp_path_factory.mktemp("loader") / "cmu.zarr"
    tile_slide(cmu_svs, path, TilingConfig(**CONFIG), slide_id="cmu")
    return open_store(path)


def test_tiles_read_by_index_equal_tiles_read_by_slice(store):
    everything = store.read_tiles(slice(0, len(store)))
    for rows in ([1, 2, 4, 5, 6], [7, 3, 4, 0], [2], []):
        np.testing.assert_array_equal(store.read_tiles(rows), everything[rows])


def test_batches_come_in_order_from_loader_threads_with_bounded_prefetch(store):
    lock = threading.Lock()
    state = {"started": 0, "consumed": 0, "max_ahead": 0, "threads": set()}

    def preprocess(tiles: np.ndarray) -> torch.Tensor:
        with lock:
            state["started"] += 1
            ahead = state["started"] - state["consumed"]
            state["max_ahead"] = max(state["max_ahead"], ahead)
            state["threads"].add(threading.current_thread().name)
        return torch.from_numpy(tiles.astype(np.float32).mean(axis=(1, 2, 3)))

    index = np.flatnonzero(store.qc()["keep"].to_numpy())[::-1].copy()  # any order works
    seen = []
    for batch in iter_batches(store, index, preprocess, batch_size=5, threads=2, prefetch=3):
        time.sleep(0.01)  # a slow model: the loader must wait for it, not run away
        with lock:
            state["consumed"] += 1
        seen.extend(batch.tile_index.tolist())
        expected = store.read_tiles(batch.tile_index).astype(np.float32).mean(axis=(1, 2, 3))
        np.testing.assert_allclose(batch.tiles.numpy(), expected, rtol=1e-6)
        assert batch.start == len(seen) - len(batch.tile_index)
    assert seen == index.tolist()
    assert state["max_ahead"] <= 3 + 1  # prefetched batches plus the one being handed over
    assert all(name.startswith("embed-loader") for name in state["threads"])


def test_loader_threads_run_at_a_lower_priority_than_the_model(store):
    import os
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("threads have their own priority on Linux only")
    seen = []

    def preprocess(tiles: np.ndarray) -> torch.Tensor:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return torch.zeros(len(tiles))

    list(iter_batches(store, np.arange(len(store)), preprocess, batch_size=4, threads=2))
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen and all(nice == min(mine + 10, 19) for nice in seen)
