"""Resume: complete parts are skipped, other identities refused, a crashed slide is redone."""

from __future__ import annotations

import numpy as np
import pytest
from embedding_project import CONFIG, TinyEmbedder

from embedders import embed_slide
from slideflow_core.features import list_parts, read_features
from slideflow_core.store import StoreError
from tiling import TilingConfig, open_store, tile_slide


@pytest.fixture
def store(tmp_path, cmu_svs):
    path = tmp_path / "cmu.zarr"
    tile_slide(cmu_svs, path, TilingConfig(**CONFIG), slide_id="cmu")
    return path


def test_a_complete_part_is_skipped_and_left_untouched(store):
    first = embed_slide(store, TinyEmbedder(), batch_size=8)
    assert first.status == "done" and first.n_tiles > 16
    stamp = list_parts(store)["tiny"]["time"]
    again = embed_slide(store, TinyEmbedder(), batch_size=32)  # batch size is not identity
    assert again.status == "skipped"
    assert list_parts(store)["tiny"]["time"] == stamp
    tiles = open_store(store).read_tiles(read_features(store, "tiny").tile_index)
    np.testing.assert_allclose(
        read_features(store, "tiny").features, TinyEmbedder().embed(tiles), atol=2e-3
    )


def test_another_model_or_selection_is_an_error_unless_overwritten(store):
    embed_slide(store, TinyEmbedder(seed=0), batch_size=8)
    with pytest.raises(StoreError, match="made differently") as info:
        embed_slide(store, TinyEmbedder(seed=1))
    assert "overwrite" in info.value.hint
    with pytest.raises(StoreError):
        embed_slide(store, TinyEmbedder(seed=0), tiles="all")
    before = read_features(store, "tiny").features
    assert embed_slide(store, TinyEmbedder(seed=1), overwrite=True).status == "done"
    assert not np.allclose(read_features(store, "tiny").features, before)
    # Under another name both coexist.
    assert embed_slide(store, TinyEmbedder(seed=0), name="tiny-seed0").status == "done"
    assert set(list_parts(store)) == {"tiny", "tiny-seed0"}


def test_a_crash_mid_slide_leaves_no_part_and_the_rerun_redoes_it(store):
    crashing = TinyEmbedder(fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_slide(store, crashing, batch_size=8)
    assert crashing.calls == 3  # it got through two batches before dying
    assert "tiny" not in list_parts(store)
    assert not list((store / "features").glob("*.partial"))
    with pytest.raises(StoreError, match="no complete features/tiny"):
        read_features(store, "tiny")
    redo = embed_slide(store, TinyEmbedder(), batch_size=8)
    assert redo.status == "done"
    assert len(read_features(store, "tiny")) == redo.n_tiles
