"""The embed and segment stages come from their configs: validated, named parts, plain data."""

from __future__ import annotations

import pytest

from embedders import EmbedConfig, EmbedConfigError, EmbedStage
from embedders.dense import SegmentConfig, SegmentConfigError, SegmentStage
from slideflow_core.stages import StageConfigError, create_stage


def test_embed_config_round_trips_and_names_its_part():
    config = EmbedConfig(model="timm:vit_small_patch16_224", weights="w.safetensors", tiles="all")
    assert EmbedConfig.from_dict(config.to_dict()) == config
    stage = create_stage("embed", config.to_dict())
    assert isinstance(stage, EmbedStage) and stage.config == config
    assert stage.part() == "features/timm_vit_small_patch16_224"
    assert create_stage("embed", {"model": "uni", "name": "uni-v1"}).part() == "features/uni-v1"
    pooled = {"model": "virchow2", "model_options": {"pooling": "cls+mean"}}
    assert create_stage("embed", pooled).part() == "features/virchow2.cls-mean"
    assert (EmbedStage.name, EmbedStage.executor, EmbedStage.order) == ("embed", "actors", 20)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"model": ""}, "model is empty"),
        ({"model": "uni", "tiles": "some"}, "'keep' or 'all'"),
        ({"model": "uni", "dtype": "bfloat16"}, "float16 or float32"),
        ({"model": "uni", "num_actors": 0}, "num_actors must be a positive integer"),
        ({"model": "uni", "name": "../x"}, "not a valid store part name"),
        ({"model": "uni", "batch": 3}, "unknown settings ['batch']"),
        ({}, "model is missing"),
    ],
)
def test_bad_embed_settings_are_named_with_a_hint(settings, words):
    with pytest.raises(StageConfigError) as info:
        create_stage("embed", settings)
    assert words in str(info.value) and info.value.hint


def test_a_factory_model_needs_a_part_name():
    with pytest.raises(EmbedConfigError, match="needs name="):
        EmbedConfig(model=dict)
    assert EmbedStage(EmbedConfig(model=dict, name="mine")).part() == "features/mine"


def test_segment_config_round_trips_and_names_its_part():
    config = SegmentConfig(segmenter="hovernet-head", weights="head.safetensors", target_mpp=0.5)
    assert SegmentConfig(**config.to_dict()) == config
    stage = create_stage("segment", config.to_dict())
    assert isinstance(stage, SegmentStage) and stage.part() == "cells/hovernet-head"
    assert create_stage("segment", {"name": "run1"}).part() == "cells/run1"
    assert (SegmentStage.name, SegmentStage.executor, SegmentStage.order) == (
        "segment",
        "tasks",
        30,
    )
    # The grid alone decides the cells: a run name or weights path is not identity.
    assert set(config.grid()) == {"tile_px", "overlap_px", "band_rows", "tiles", "min_overlap"}


def test_bad_segment_settings_are_named_with_a_hint():
    with pytest.raises(SegmentConfigError, match="target_mpp=0") as info:
        SegmentConfig(target_mpp=0)
    assert info.value.hint
    with pytest.raises(StageConfigError, match="tile_px"):
        create_stage("segment", {"tile_px": 10})
    with pytest.raises(StageConfigError, match="unknown settings"):
        create_stage("segment", {"seg_mpp": 0.5})


def test_a_segmenter_that_does_not_take_an_option_says_so():
    from embedders.dense import SegmentationError
    from embedders.dense.slide import build_segmenter

    with pytest.raises(SegmentationError, match="does not take") as info:
        build_segmenter(SegmentConfig(weights="x.safetensors"))
    assert "classical takes no weights" in info.value.hint
    assert build_segmenter(SegmentConfig(target_mpp=0.25)).mpp == 0.25
