"""A damaged features or attention part is never read as zeros: reads raise, verify finds it."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.features import (
    read_attention,
    read_features,
    write_attention,
    write_features,
)
from slideflow_core.store import (
    StoreCorruptError,
    commit_store,
    part_state,
    read_store_attrs,
    start_store,
)
from slideflow_core.verify import repair, verify

N, DIM = 3000, 512  # float32: 1024 rows per chunk, three chunks
IDENTITY = {"model": "m"}
CHUNK = "features/m/features/c/1/0"


pytestmark = pytest.mark.fault


def _write(store, rng_seed=0):
    values = np.random.default_rng(rng_seed).normal(size=(N, DIM)).astype(np.float32)
    with write_features(
        store,
        "m",
        tile_index=np.arange(N),
        coords=np.stack([np.arange(N) * 256, np.zeros(N)], axis=1),
        dim=DIM,
        info={"identity": IDENTITY},
        dtype="float32",
    ) as writer:
        for start in range(0, N, writer.chunk_rows):
            writer.put(start, values[start : start + writer.chunk_rows])
    return values


@pytest.fixture
def store(tmp_path):
    final = tmp_path / "s1.zarr"
    commit_store(start_store(final, {"slide_id": "s1"}), final)
    values = _write(final)
    write_attention(final, "run1", np.linspace(0, 1, N), model_id="m", info={"head": "abmil"})
    return final, values


def _damage(path, how):
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))


def test_the_parts_record_their_files(store):
    store, values = store
    parts = read_store_attrs(store)["parts"]
    assert CHUNK in parts["features/m"]["manifest"]["files"]
    assert "attention/run1/scores/c/0" in parts["attention/run1"]["manifest"]["files"]
    np.testing.assert_array_equal(read_features(store, "m").features, values)
    assert verify(store, deep=True).ok


@pytest.mark.parametrize("how", ["deleted", "truncated", "flipped"])
def test_a_damaged_feature_chunk_is_refused_and_named(store, how):
    store, _ = store
    _damage(store / CHUNK, how)
    with pytest.raises(StoreCorruptError) as raised:
        read_features(store, "m")
    assert (raised.value.store, raised.value.part, raised.value.chunk) == (
        str(store),
        "features/m",
        CHUNK,
    )
    cheap, deep = verify(store), verify(store, deep=True)
    assert [p.part for p in deep.broken] == ["features/m"]
    if how == "flipped":
        assert cheap.ok and deep.broken[0].problems.wrong_checksum == (CHUNK,)
        assert part_state(store, "features/m", IDENTITY) == "complete"  # cheap check
        assert repair(deep) == ("features/m",)
        assert part_state(store, "features/m", IDENTITY) == "missing"
    else:
        assert [p.part for p in cheap.broken] == ["features/m"]
        assert part_state(store, "features/m", IDENTITY) == "corrupt"
        with pytest.raises(StoreCorruptError, match=CHUNK):  # no attention for a broken part
            write_attention(store, "run2", np.zeros(N), model_id="m", info={})

    values = _write(store, rng_seed=1)  # the stage redoes the part
    np.testing.assert_array_equal(read_features(store, "m").features, values)
    assert part_state(store, "features/m", IDENTITY) == "complete"
    assert verify(store, deep=True).ok


@pytest.mark.parametrize("how", ["deleted", "truncated", "flipped"])
def test_a_damaged_attention_chunk_is_refused_and_named(store, how):
    store, _ = store
    key = "attention/run1/scores/c/0"
    _damage(store / key, how)
    with pytest.raises(StoreCorruptError) as raised:
        read_attention(store, "run1")
    assert raised.value.part == "attention/run1" and raised.value.chunk == key
    assert [p.part for p in verify(store, deep=True).broken] == ["attention/run1"]
    np.testing.assert_array_equal(read_features(store, "m").features.shape, (N, DIM))
