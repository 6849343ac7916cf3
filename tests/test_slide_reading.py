"""Reads by level and by physical resolution; padding; thumbnails; threads; pickling."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

from slideflow_core.errors import ResolutionError
from slideflow_core.slides import Slide, open_slide, resize, slide_id_from_path

NDPI = "hamamatsu_test3-DAPI-2-387.ndpi"  # 40x, pyramid 1, 2, 4, 8 (and more in OpenSlide)


@pytest.fixture(params=["openslide", "tiffslide"])
def backend(request):
    return request.param


def test_read_at_a_stored_level_returns_the_stored_pixels(slides_dir, backend):
    with open_slide(slides_dir / NDPI, backend=backend) as slide:
        tile = slide.read_at((1024, 2048), mpp=slide.mpp * 2, tile_px=128)
        stored = slide.read_region((1024, 2048), 1, (128, 128))
        np.testing.assert_array_equal(tile, stored)


def test_read_at_between_levels_reads_finer_level_and_resizes_once(cmu_svs, backend):
    with open_slide(cmu_svs, backend=backend) as slide:
        choice = slide.best_level_for(1.0)
        assert (choice.level, choice.needs_resize) == (0, True)
        assert choice.read_px(256) == 513  # 256 * 1.0 / 0.499
        tile = slide.read_at((500, 600), mpp=1.0, tile_px=256)
        expected = resize(slide.read_region((500, 600), 0, (513, 513)), (256, 256))
        assert tile.shape == (256, 256, 3)
        np.testing.assert_array_equal(tile, expected)


def test_read_at_rectangular_tiles(cmu_svs):
    with open_slide(cmu_svs) as slide:
        assert slide.read_at((0, 0), mpp=0.5, tile_px=(64, 32)).shape == (32, 64, 3)


def test_read_at_refuses_upsampling(cmu_svs):
    with open_slide(cmu_svs) as slide, pytest.raises(ResolutionError, match="finest level"):
        slide.read_at((0, 0), mpp=0.25, tile_px=64)


def test_regions_outside_the_slide_are_white_for_every_backend(cmu_svs, backend):
    with open_slide(cmu_svs, backend=backend) as slide:
        w, h = slide.dimensions
        region = slide.read_region((w - 32, h - 16), 0, (64, 64))
        inside = slide.read_region((w - 32, h - 16), 0, (32, 16))
        np.testing.assert_array_equal(region[:16, :32], inside)
        assert (region[16:] == 255).all()
        assert (region[:, 32:] == 255).all()
        before = slide.read_region((-10, -20), 0, (30, 40))
        assert (before[:20] == 255).all() and (before[:, :10] == 255).all()
        np.testing.assert_array_equal(before[20:, 10:], slide.read_region((0, 0), 0, (20, 20)))
        assert (slide.read_region((w + 5, 0), 0, (8, 8)) == 255).all()


def test_bad_region_arguments_are_clear(cmu_svs):
    with open_slide(cmu_svs) as slide:
        with pytest.raises(IndexError, match="level 3"):
            slide.read_region((0, 0), 3, (8, 8))
        with pytest.raises(ValueError, match="positive"):
            slide.read_region((0, 0), 0, (0, 8))


def test_thumbnail_keeps_aspect_and_content(cmu_svs, backend):
    with open_slide(cmu_svs, backend=backend) as slide:
        thumb = slide.thumbnail(256)
        assert thumb.shape == (256, 192, 3)  # 2220 x 2967 scaled to 256 high
        assert thumb.mean() < 240  # real tissue, not a blank canvas
        full = resize(slide.read_region((0, 0), 0, slide.dimensions), (192, 256))
        assert np.abs(thumb.astype(int) - full.astype(int)).mean() < 3


def test_thumbnail_uses_a_coarse_level_when_there_is_one(slides_dir):
    with open_slide(slides_dir / NDPI) as slide:
        thumb = slide.thumbnail(200)
    assert max(thumb.shape[:2]) == 200


def test_reads_from_many_threads_equal_serial_reads(slides_dir, backend):
    with open_slide(slides_dir / NDPI, backend=backend) as slide:
        rng = np.random.default_rng(0)
        spots = [(int(x), int(y)) for x, y in rng.integers(0, 3500, size=(48, 2))]
        serial = [slide.read_region(s, 0, (96, 96)) for s in spots]
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda s: slide.read_region(s, 0, (96, 96)), spots))
        for a, b in zip(serial, threaded, strict=True):
            np.testing.assert_array_equal(a, b)


def test_slide_pickles_as_a_record_and_reopens(cmu_svs, backend):
    slide = open_slide(cmu_svs, backend=backend, mpp=0.5, slide_id="cmu")
    payload = pickle.dumps(slide)
    assert len(payload) < 2000  # no handle, no pixels
    clone = pickle.loads(payload)
    assert (clone.slide_id, clone.mpp, clone.backend_choice) == ("cmu", 0.5, slide.backend_choice)
    np.testing.assert_array_equal(
        clone.read_region((10, 20), 0, (32, 32)), slide.read_region((10, 20), 0, (32, 32))
    )
    slide.close()
    clone.close()


def _read_in_child(slide: Slide) -> np.ndarray:
    return slide.read_at((100, 100), mpp=1.0, tile_px=64)


def test_slide_travels_to_another_process(cmu_svs):
    slide = open_slide(cmu_svs)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        remote = pool.submit(_read_in_child, slide).result(timeout=120)
    np.testing.assert_array_equal(remote, _read_in_child(slide))


@pytest.mark.parametrize(
    ("path", "slide_id"),
    [
        ("/a/b/CMU-1.svs", "CMU-1"),
        ("x.ome.tif", "x"),
        ("case.v2.ndpi", "case.v2"),
        ("s3://bucket/slides/a.svs", "a"),
    ],
)
def test_default_slide_id_is_the_file_name_without_extension(path, slide_id):
    assert slide_id_from_path(path) == slide_id
