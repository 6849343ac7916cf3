"""Tiles are grouped into runs of one row that keep their order and respect the size cap."""

from __future__ import annotations

import numpy as np
import pytest

from tiling.reader import plan_blocks


@pytest.mark.parametrize("stride", [100, 128, 200])
def test_blocks_are_ordered_runs_that_partition_the_tiles_and_fit_the_cap(stride):
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(0, 5000, stride), np.arange(0, 3000, stride))
    level_xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
    level_xy = level_xy[rng.random(len(level_xy)) < 0.7]  # tissue with holes
    blocks = plan_blocks(level_xy, 128, 1024)
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(len(level_xy)))
    for block in blocks:
        rows = level_xy[block]
        assert len(set(rows[:, 1].tolist())) == 1
        assert rows[:, 0].max() + 128 - rows[:, 0].min() <= 1024


def test_a_gap_of_a_tile_or_more_splits_a_row():
    level_xy = np.array([[0, 0], [100, 0], [300, 0], [400, 0]])
    blocks = plan_blocks(level_xy, 100, 4096)
    assert [b.tolist() for b in blocks] == [[0, 1], [2, 3]]


def test_tiles_larger_than_the_cap_are_read_alone():
    level_xy = np.array([[0, 0], [600, 0], [0, 600]])
    assert [b.tolist() for b in plan_blocks(level_xy, 600, 512)] == [[0], [1], [2]]


def test_unsorted_coords_keep_their_order():
    level_xy = np.array([[512, 0], [0, 0], [256, 0], [512, 0]])
    assert [b.tolist() for b in plan_blocks(level_xy, 256, 4096)] == [[0], [1, 2, 3]]


def test_a_contiguous_row_is_one_block():
    level_xy = np.stack([np.arange(0, 1024, 256), np.zeros(4, np.int64)], axis=1)
    assert [b.tolist() for b in plan_blocks(level_xy, 256, 1024)] == [[0, 1, 2, 3]]


def test_no_tiles_no_blocks():
    assert plan_blocks(np.zeros((0, 2), np.int64), 256, 4096) == []
