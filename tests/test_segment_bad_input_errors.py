"""Bad input to the cells stage fails at once, naming the file or value and the fix."""

from __future__ import annotations

import pytest

from embedders.dense import (
    AnnotationError,
    ClassicalConfig,
    SegmentationError,
    SegmentConfig,
    create_segmenter,
    read_annotated_folder,
    segment_slide,
)
from slideflow_core.errors import RegistryError
from slideflow_core.store import StoreError, start_store


def test_a_bare_slide_needs_an_output(cmu_svs):
    with pytest.raises(SegmentationError, match="no output given") as info:
        segment_slide(cmu_svs, "classical")
    assert "out=" in info.value.hint


def test_a_store_without_tiles_or_a_broken_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="no slide store"):
        segment_slide(tmp_path / "missing.zarr", "classical")
    final = tmp_path / "empty.zarr"
    start_store(final, {"slide_id": "empty"}).rename(final)
    with pytest.raises(SegmentationError, match="no tiling part") as info:
        segment_slide(final, "classical")
    assert "tile" in info.value.hint
    with pytest.raises(SegmentationError, match="out= was given"):
        segment_slide(final, "classical", out=tmp_path / "x.parquet")


def test_unknown_segmenters_and_bad_settings_are_named():
    with pytest.raises(RegistryError, match="unknown segmenter 'clasical'") as info:
        create_segmenter("clasical")
    assert "classical" in str(info.value)
    with pytest.raises(ValueError, match="overlap_px"):
        SegmentConfig(tile_px=256, overlap_px=200)
    with pytest.raises(ValueError, match="tiles='some'"):
        SegmentConfig(tiles="some")
    with pytest.raises(ValueError, match="mpp=0"):
        ClassicalConfig(mpp=0)


def test_an_unknown_or_uncalibrated_slide_fails_clearly(tmp_path, slides_dir):
    from slideflow_core.errors import SlideflowError

    with pytest.raises(SlideflowError):
        segment_slide(tmp_path / "nope.svs", "classical", out=tmp_path / "c.parquet")


def test_annotation_folders_must_hold_pairs(tmp_path):
    with pytest.raises(AnnotationError, match="no image"):
        read_annotated_folder(tmp_path)
    with pytest.raises(AnnotationError, match="no such folder"):
        read_annotated_folder(tmp_path / "absent")
