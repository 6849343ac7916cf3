"""Every TileReader method returns exactly the pixels of Slide.read_region / Slide.read_at."""

from __future__ import annotations

import numpy as np
import pytest

from slideflow_core.slides import open_slide
from tiling.reader import TileReader

METHODS = ["per_tile", "region", "native", "auto"]


@pytest.fixture(params=["openslide", "tiffslide"])
def backend(request):
    return request.param


def _grid(x0: int, y0: int, x1: int, y1: int, stride: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x0, x1, stride), np.arange(y0, y1, stride))
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)


def _read_all(reader: TileReader, coords: np.ndarray) -> np.ndarray:
    out = np.zeros((len(coords), reader.tile_px, reader.tile_px, 3), np.uint8)
    seen = np.zeros(len(coords), np.int64)
    for indices, tiles in reader.read(coords):
        assert tiles.dtype == np.uint8
        assert tiles.shape == (len(indices), reader.tile_px, reader.tile_px, 3)
        out[indices] = tiles
        np.add.at(seen, indices, 1)
    assert (seen == 1).all(), "every index must be yielded exactly once"
    return out


@pytest.mark.parametrize("method", METHODS)
def test_no_resize_tiles_equal_read_region_including_edges_and_overlap(cmu_svs, backend, method):
    # Stride 200 < 256 overlaps; the grids start before and end past the slide (white padding).
    coords = np.concatenate([_grid(-100, -60, 900, 540, 200), _grid(1700, 2500, 2300, 3050, 200)])
    with open_slide(cmu_svs, backend=backend) as slide:
        reader = TileReader(
            slide, level=0, read_px=256, tile_px=256, method=method, max_region_px=1024
        )
        tiles = _read_all(reader, coords)
        for i, (x, y) in enumerate(coords.tolist()):
            np.testing.assert_array_equal(tiles[i], slide.read_region((x, y), 0, (256, 256)))


@pytest.mark.parametrize("method", METHODS)
def test_resized_tiles_equal_read_at(cmu_svs, backend, method):
    with open_slide(cmu_svs, backend=backend) as slide:
        choice = slide.best_level_for(0.6)
        assert choice.needs_resize
        read_px = choice.read_px(128)
        coords = _grid(0, 1000, 2220, 2000, round(read_px * 1.5))  # gaps between tiles
        reader = TileReader(slide, level=choice.level, read_px=read_px, tile_px=128, method=method)
        tiles = _read_all(reader, coords)
        for i, (x, y) in enumerate(coords.tolist()):
            np.testing.assert_array_equal(tiles[i], slide.read_at((x, y), mpp=0.6, tile_px=128))


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("method", METHODS)
def test_synthetic_slide_levels_equal_read_region(synthetic_slide, backend, method, level):
    path, _ = synthetic_slide
    with open_slide(path, backend=backend) as slide:
        downsample = round(slide.level_downsamples[level])
        extent = 192 * downsample
        w, h = slide.dimensions
        # Tile positions on the level's pixel lattice (what a grid at this level produces).
        coords = _grid(-extent // 2, 0, w + extent // 2, h, extent)
        coords -= coords % downsample
        coords = coords[(coords[:, 1] < 2 * extent) | (coords[:, 1] >= h - 2 * extent)]
        reader = TileReader(slide, level=level, read_px=192, tile_px=192, method=method)
        tiles = _read_all(reader, coords)
        for i, (x, y) in enumerate(coords.tolist()):
            np.testing.assert_array_equal(tiles[i], slide.read_region((x, y), level, (192, 192)))


def test_tiles_past_the_edge_are_white_like_read_region(cmu_svs):
    with open_slide(cmu_svs) as slide:
        w, h = slide.dimensions
        coords = np.array([[-128, -128], [w - 64, h - 32], [w + 10, 0]])
        reader = TileReader(slide, level=0, read_px=128, tile_px=128, method="native")
        tiles = _read_all(reader, coords)
    assert (tiles[0] == 255).all()
    assert (tiles[1, 32:] == 255).all() and (tiles[1, :, 64:] == 255).all()
    assert not (tiles[1, :32, :64] == 255).all()
    assert (tiles[2] == 255).all()


def test_threads_give_the_same_tiles_in_the_same_order(synthetic_slide):
    path, _ = synthetic_slide
    coords = _grid(0, 0, 6144, 4608, 256)
    with open_slide(path) as slide:
        batches = {}
        for threads in (1, 2):
            reader = TileReader(
                slide, level=0, read_px=256, tile_px=256, threads=threads, max_region_px=1024
            )
            batches[threads] = list(reader.read(coords))
    assert len(batches[1]) == len(batches[2])
    for (i1, t1), (i2, t2) in zip(batches[1], batches[2], strict=True):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(t1, t2)
