"""Parts added to a committed store (features, attention) are atomic and self-describing."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from slideflow_core.features import (
    list_parts,
    read_attention,
    read_features,
    write_attention,
    write_features,
)
from slideflow_core.store import (
    StoreError,
    commit_store,
    part_key,
    part_state,
    start_store,
    write_part,
)


@pytest.fixture
def store(tmp_path):
    final = tmp_path / "s1.zarr"
    partial = start_store(final, {"slide_id": "s1"})
    commit_store(partial, final)
    return final


def _features(store, model="m", n=5, dim=3, fail_at=None):
    values = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    coords = np.stack([np.arange(n) * 256, np.zeros(n)], axis=1)
    with write_features(
        store,
        model,
        tile_index=np.arange(n) * 2,
        coords=coords,
        dim=dim,
        info={"identity": {"model": model}},
        dtype="float32",
    ) as writer:
        for start in range(0, n, 2):
            if fail_at is not None and start >= fail_at:
                raise RuntimeError("worker died")
            writer.put(start, values[start : start + 2])
    return values


def test_features_round_trip_with_coords_and_identity(store):
    values = _features(store)
    bag = read_features(store, "m")
    np.testing.assert_array_equal(bag.features, values)
    np.testing.assert_array_equal(bag.tile_index, np.arange(5) * 2)
    assert bag.slide_id == "s1" and bag.coords.shape == (5, 2)
    assert part_state(store, "features/m", {"model": "m"}) == "complete"
    assert part_state(store, "features/m", {"model": "other"}) == "incompatible"
    assert set(list_parts(store)) == {"m"}
    # Plain zarr readers see the same arrays.
    assert zarr.open_group(str(store), mode="r")["features/m/features"].shape == (5, 3)


def test_crash_mid_part_leaves_it_missing_and_keeps_the_old_one_out(store):
    _features(store)
    with pytest.raises(RuntimeError, match="worker died"):
        _features(store, fail_at=2)
    assert part_state(store, "features/m", {"model": "m"}) == "missing"
    assert not (store / "features" / "m.partial").exists()
    with pytest.raises(StoreError, match="no complete features/m"):
        read_features(store, "m")


def test_unwritten_rows_refuse_to_commit(store):
    with (
        pytest.raises(StoreError, match="2 of 4 rows were not written"),
        write_features(
            store, "m", tile_index=np.arange(4), coords=np.zeros((4, 2)), dim=2, info={}
        ) as writer,
    ):
        writer.put(0, np.ones((2, 2)))
    assert part_state(store, "features/m", {}) == "missing"


def test_attention_aligns_with_feature_rows(store):
    _features(store)
    write_attention(store, "run1", np.linspace(0, 1, 5), model_id="m", info={"head": "abmil"})
    att = read_attention(store, "run1")
    assert att.scores.shape == (5,) and att.info["head"] == "abmil"
    np.testing.assert_array_equal(att.tile_index, np.arange(5) * 2)
    with pytest.raises(ValueError, match="3 scores for 5 feature rows"):
        write_attention(store, "run2", np.ones(3), model_id="m", info={})


@pytest.mark.parametrize("name", ["../x", "", ".hidden", "a/b", "x.partial", "a" * 200])
def test_hostile_part_names_are_refused(name):
    with pytest.raises(StoreError, match="not a valid store part name"):
        part_key("features", name)


def test_parts_need_a_committed_store(tmp_path):
    with (
        pytest.raises(StoreError, match="no slide store"),
        write_part(tmp_path / "absent.zarr", "features/m", {}),
    ):
        pass
