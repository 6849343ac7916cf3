"""Tiles stream in bounded batches, the decoded-tile cache is capped, and readers pickle."""

from __future__ import annotations

import inspect
import pickle

import numpy as np

from slideflow_core.slides import open_slide
from tiling.native import JpegTileDecoder, find_jpeg_level
from tiling.reader import TileReader


def _grid(width: int, height: int, stride: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, width, stride), np.arange(0, height, stride))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def test_read_is_a_lazy_generator_of_block_sized_batches(synthetic_slide):
    path, _ = synthetic_slide
    coords = _grid(6144, 4608, 256)
    with open_slide(path) as slide:
        reader = TileReader(slide, level=0, read_px=256, tile_px=256, max_region_px=512)
        assert reader._decoder is not None
        probed = reader._decoder.decoded_tiles  # the sample compared with the backend
        stream = reader.read(coords)
        assert inspect.isgenerator(stream)
        indices, tiles = next(stream)
        # Only the first 2x2 block has been decoded so far, not the slide.
        assert len(indices) <= 4 and tiles.shape[0] == len(indices)
        assert reader._decoder.decoded_tiles - probed <= 4
        sizes = [len(i) for i, _ in stream]
    assert max(sizes) <= 4
    assert sum(sizes) + len(indices) == len(coords)


def _misaligned_regions(width: int, height: int, side: int) -> np.ndarray:
    return _grid(width, height, side)  # side is not a multiple of the stored 256-px tiles


def test_shared_stored_tiles_are_decoded_once_and_released_after_last_use(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        level, _ = find_jpeg_level(str(path), slide.dimensions)
    assert level is not None
    regions = _misaligned_regions(level.width, level.height, 300)
    decoder = JpegTileDecoder(level)
    decoder.expect(regions[:, 0], regions[:, 1], 300, 300)
    for x, y in regions.tolist():
        decoder.read(x, y, 300, 300)
    assert decoder.decoded_tiles == level.tiles_across * level.tiles_down
    assert len(decoder._cache) == 0  # nothing is kept once no read needs it
    decoder.close()


def test_decoded_tile_cache_never_exceeds_its_budget(synthetic_slide):
    path, _ = synthetic_slide
    with open_slide(path) as slide:
        level, _ = find_jpeg_level(str(path), slide.dimensions)
    assert level is not None
    regions = _misaligned_regions(level.width, level.height, 300)
    tile_bytes = level.tile_width * level.tile_height * 3
    decoder = JpegTileDecoder(level, cache_bytes=6 * tile_bytes)
    decoder.expect(regions[:, 0], regions[:, 1], 300, 300)
    for x, y in regions.tolist():
        reference = JpegTileDecoder(level).read(x, y, 300, 300)
        np.testing.assert_array_equal(decoder.read(x, y, 300, 300), reference)
        assert len(decoder._cache) <= 6
    decoder.close()


def test_reader_pickles_and_reads_the_same_tiles_after(cmu_svs):
    coords = _grid(2220, 2967, 512)
    with open_slide(cmu_svs) as slide:
        reader = TileReader(slide, level=0, read_px=256, tile_px=256)
        before = [t for _, t in reader.read(coords)]
        clone = pickle.loads(pickle.dumps(reader))
        after = [t for _, t in clone.read(coords)]
        clone.close()
        clone.slide.close()
    assert clone.method == reader.method == "native"
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_empty_coords_yield_nothing(cmu_svs):
    with open_slide(cmu_svs) as slide:
        reader = TileReader(slide, level=0, read_px=64, tile_px=64)
        assert list(reader.read(np.zeros((0, 2), np.int64))) == []
