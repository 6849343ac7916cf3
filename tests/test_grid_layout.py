"""The grid: physical tile size, stride, edges, tissue and ROI filters."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPolygon, box

from slideflow_core.slides import open_slide
from tiling.config import TilingConfig
from tiling.grid import plan_grid


@pytest.fixture(scope="module")
def cmu(cmu_svs):
    with open_slide(cmu_svs) as slide:
        yield slide


def test_tiles_at_the_native_resolution_are_read_as_stored(cmu):
    grid = plan_grid(cmu, TilingConfig(mpp=0.499, tile_px=256))
    assert (grid.level, grid.read_px, grid.extent_px) == (0, 256, 256)
    assert not grid.choice.needs_resize
    assert len(grid) == (2220 // 256) * (2967 // 256)
    assert grid.coords[1].tolist() == [256, 0]


def test_coarser_tiles_read_a_larger_region(cmu):
    grid = plan_grid(cmu, TilingConfig(mpp=1.0, tile_px=128))
    assert grid.read_px == 257  # 128 px at 1.0 µm/px from a 0.499 µm/px level
    assert grid.extent_px == 257
    assert grid.choice.actual_mpp == 1.0


def test_rows_are_sorted_row_major(cmu):
    coords = plan_grid(cmu, TilingConfig(mpp=0.5, tile_px=200)).coords
    order = np.lexsort((coords[:, 0], coords[:, 1]))
    np.testing.assert_array_equal(order, np.arange(len(coords)))


def test_overlap_shrinks_the_stride(cmu):
    grid = plan_grid(cmu, TilingConfig(mpp=0.499, tile_px=256, overlap_px=64))
    assert grid.stride_px == 192
    assert grid.coords[1, 0] - grid.coords[0, 0] == 192


def test_drop_keeps_tiles_inside_and_pad_covers_the_edge(cmu):
    dropped = plan_grid(cmu, TilingConfig(mpp=0.499, tile_px=256, edge="drop"))
    padded = plan_grid(cmu, TilingConfig(mpp=0.499, tile_px=256, edge="pad"))
    assert (dropped.coords + 256 <= np.array(cmu.dimensions)).all()
    assert len(padded) == 9 * 12  # ceil(2220/256) x ceil(2967/256)
    assert padded.coords[:, 0].max() + 256 >= 2220


def test_magnification_and_tile_um_set_the_resolution():
    assert TilingConfig(magnification="20x").target_mpp == 0.5
    assert TilingConfig(tile_um=128, tile_px=256).target_mpp == 0.5
    with pytest.raises(ValueError, match="only one"):
        TilingConfig(mpp=0.5, magnification="20x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tile_px": 4},
        {"overlap_px": 256},
        {"edge": "wrap"},
        {"min_tissue_fraction": 2},
        {"band_tiles": 100, "shard_tiles": 64},
        {"mpp": -1},
        {"magnification": "twenty"},
    ],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        TilingConfig(**kwargs)


def test_config_round_trips_and_identity_ignores_how(cmu):
    config = TilingConfig(mpp=0.5, tissue_params={"threshold": 8})
    assert TilingConfig.from_dict(config.to_dict()) == config
    assert (
        config.identity()
        == TilingConfig(mpp=0.5, tissue_params={"threshold": 8}, read_method="region").identity()
    )
    assert config.identity() != TilingConfig(mpp=0.25).identity()


def test_coverage_threshold_drops_background(cmu):
    config = TilingConfig(mpp=0.499, tile_px=256, min_tissue_fraction=0.5)
    n = (2220 // 256) * (2967 // 256)
    coverage = np.linspace(0, 1, n)
    grid = plan_grid(cmu, config, coverage=coverage)
    assert len(grid) == int((coverage >= 0.5).sum())
    assert (grid.tissue_fraction >= 0.5).all()
    none = plan_grid(cmu, TilingConfig(mpp=0.499), coverage=np.zeros(n))
    assert len(none) == 0


def test_roi_keeps_tiles_whose_centre_is_inside(cmu):
    roi = MultiPolygon([box(0, 0, 600, 600)])
    grid = plan_grid(cmu, TilingConfig(mpp=0.499, tile_px=256), roi=roi)
    assert sorted(map(tuple, grid.coords.tolist())) == [(0, 0), (0, 256), (256, 0), (256, 256)]
