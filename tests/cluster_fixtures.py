"""Helpers for the cluster tests: manifests, free ports, a private Ray, store checks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from slideflow_core.store import PARTIAL_SUFFIX, part_state
from tiling import TilingConfig, open_store

#: Small tiles at the synthetic slide's 0.5 µm/px working resolution: a few
#: hundred tiles per slide, a second or two of work each.
TILING = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=64, band_tiles=256)


def write_manifest(path: Path, slide: str, n: int, prefix: str = "s") -> list[str]:
    """A manifest of ``n`` slides that all point at ``slide``; returns their ids."""
    ids = [f"{prefix}{i:02d}" for i in range(n)]
    pd.DataFrame({"slide_id": ids, "path": [slide] * n}).to_csv(path, index=False)
    return ids


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_ray() -> Iterator[None]:
    """No Ray in this process before or after (a test that starts its own cluster)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()


def assert_complete_once(stores: Path, ids: list[str], config: TilingConfig = TILING) -> None:
    """Every slide's store is complete, with each grid tile once and every tile written.

    All slides are copies of one file, so their coordinates and pixels must match.
    """
    leftovers = [p.name for p in stores.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    assert not leftovers, f"partial stores left behind: {leftovers}"
    reference = None
    for slide_id in ids:
        path = stores / f"{slide_id}.zarr"
        assert part_state(path, "tiling", config.identity()) == "complete", slide_id
        tiles = open_store(path)
        coords = tiles.coords
        assert len(coords) > 0
        assert len({tuple(c) for c in coords.tolist()}) == len(coords), "duplicate tiles"
        assert not tiles.qc()["blur"].isna().any(), "a tile was never written"
        pixels = np.asarray(tiles.group["tiles"][:])
        if reference is None:
            reference = (coords, pixels)
        np.testing.assert_array_equal(coords, reference[0])
        np.testing.assert_array_equal(pixels, reference[1])
