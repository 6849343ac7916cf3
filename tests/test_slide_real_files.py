"""Every shipped real slide reads with every backend that supports it, consistently."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tiffslide

from slideflow_core.errors import MissingResolutionError, SlideReadError
from slideflow_core.slides import open_slide

# name -> (level-0 size, mpp or None when the file has no real calibration, backends that open it)
REAL_SLIDES = {
    "CMU-1-Small-Region.svs": ((2220, 2967), 0.499, {"openslide", "tiffslide"}),
    "small.svs": ((16, 16), 0.499, {"openslide", "tiffslide"}),
    "hamamatsu_test3-DAPI-2-387.ndpi": ((3968, 4864), 0.22818, {"openslide", "tiffslide"}),
    "boxes.tiff": ((300, 250), None, {"openslide", "tiffslide"}),
    "pathml_small_HE_levels.tiff": ((300, 250), None, {"openslide", "tiffslide"}),
    "large-image_yb10kx5k.zstd.tiff": ((10000, 5000), None, {"openslide", "tiffslide"}),
    "boxes_0.dcm": ((16, 16), 0.499, {"openslide"}),
    "boxes_1.dcm": ((16, 16), 0.499, {"openslide"}),
    "highdicom_sm_image.dcm": ((50, 50), 0.499, {"openslide"}),
    "wsi2dcm_jpeg.dcm": ((957, 715), 16.783, {"openslide"}),
    "pathml_small_vectra.qptiff": ((1920, 1440), 0.49653, {"tiffslide"}),
    "qupath-export_OS-1-detail.ome.tif": ((1101, 1101), 0.22710, {"tiffslide"}),
}
BROKEN = ["unreadable.svs", "unopenable.tiff"]
CASES = [(name, backend) for name, (_, _, ok) in REAL_SLIDES.items() for backend in sorted(ok)]


def test_every_shipped_slide_is_covered(slides_dir):
    on_disk = {p.name for p in slides_dir.iterdir() if p.suffix != ".md"}
    assert on_disk == set(REAL_SLIDES) | set(BROKEN)


@pytest.mark.parametrize(("name", "backend"), CASES)
def test_backend_reads_size_and_mpp(slides_dir, name, backend):
    size, mpp, _ = REAL_SLIDES[name]
    with open_slide(slides_dir / name, backend=backend) as slide:
        assert slide.backend_choice.backend == backend
        assert slide.dimensions == size
        if mpp is None:
            assert not slide.has_mpp
        else:
            assert slide.mpp == pytest.approx(mpp, rel=1e-4)
            assert slide.level_mpp[0] == pytest.approx(mpp, rel=1e-4)
        region = slide.read_region((0, 0), slide.level_count - 1, (8, 8))
        assert region.shape == (8, 8, 3)
        assert region.dtype == np.uint8


@pytest.mark.parametrize(
    "name", [n for n, (_, _, ok) in REAL_SLIDES.items() if ok == {"openslide", "tiffslide"}]
)
def test_both_backends_agree_on_pixels_and_levels(slides_dir, name):
    with (
        open_slide(slides_dir / name, backend="openslide") as a,
        open_slide(slides_dir / name, backend="tiffslide") as b,
    ):
        assert a.dimensions == b.dimensions
        assert a.has_mpp == b.has_mpp
        if a.has_mpp:
            assert a.mpp == pytest.approx(b.mpp)
        # OpenSlide may add JPEG-scaled levels (NDPI: 7 vs 4); the stored ones match.
        shared = min(a.level_count, b.level_count)
        assert a.level_dimensions[:shared] == b.level_dimensions[:shared]
        w, h = a.dimensions
        size = (min(w, 256), min(h, 256))
        location = ((w - size[0]) // 2, (h - size[1]) // 2)
        np.testing.assert_array_equal(
            a.read_region(location, 0, size), b.read_region(location, 0, size)
        )


def test_auto_backend_falls_back_and_records_why(slides_dir):
    with open_slide(slides_dir / "qupath-export_OS-1-detail.ome.tif") as slide:
        choice = slide.backend_choice
        assert choice.backend == "tiffslide"
        assert [name for name, _ in choice.tried] == ["openslide"]
        assert "Unsupported" in choice.tried[0][1]
        assert choice.as_dict()["tried"][0][0] == "openslide"


@pytest.mark.parametrize("name", BROKEN)
def test_broken_files_raise_slide_read_error_naming_the_file(slides_dir, name):
    with pytest.raises(SlideReadError) as info:
        open_slide(slides_dir / name)
    message = str(info.value)
    assert name in message
    assert "openslide" in message
    assert "tiffslide" in message
    assert info.value.hint


@pytest.mark.parametrize("name", BROKEN)
@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_broken_files_fail_with_a_forced_backend_too(slides_dir, name, backend):
    with pytest.raises(SlideReadError, match=name):
        open_slide(slides_dir / name, backend=backend)


def test_missing_file_is_a_slide_read_error(tmp_path):
    with pytest.raises(SlideReadError, match="not found"):
        open_slide(tmp_path / "nope.svs")


def test_unsupported_backend_for_a_format_says_so(slides_dir):
    with pytest.raises(SlideReadError, match=r"wsi2dcm_jpeg\.dcm"):
        open_slide(slides_dir / "wsi2dcm_jpeg.dcm", backend="tiffslide")


def test_placeholder_72_dpi_is_reported_as_missing_mpp(slides_dir):
    path = slides_dir / "boxes.tiff"
    raw = openslide.OpenSlide(str(path)).properties["openslide.mpp-x"]
    assert float(raw) == pytest.approx(352.78, rel=1e-3)  # what the file claims
    with open_slide(path) as slide:
        assert not slide.has_mpp
        with pytest.raises(MissingResolutionError) as info:
            _ = slide.mpp
        assert "boxes.tiff" in str(info.value)
        assert "mpp=" in info.value.hint
        with pytest.raises(MissingResolutionError):
            slide.read_at((0, 0), mpp=1.0, tile_px=16)


def test_mpp_override_calibrates_an_uncalibrated_slide(slides_dir):
    with open_slide(slides_dir / "pathml_small_HE_levels.tiff", mpp=0.5) as slide:
        assert slide.mpp == 0.5
        assert slide.resolution.source == "user override"
        assert slide.level_mpp[1] == pytest.approx(1.0)
        assert slide.magnification == pytest.approx(20.0)


def test_bad_mpp_override_is_refused(slides_dir):
    with pytest.raises(ValueError, match="positive"):
        open_slide(slides_dir / "small.svs", mpp=-1)


def test_aperio_metadata_vendor_objective_and_associated_images(cmu_svs):
    for backend in ("openslide", "tiffslide"):
        with open_slide(cmu_svs, backend=backend) as slide:
            assert slide.vendor == "aperio"
            assert slide.objective_power == 20
            assert slide.magnification == 20
            assert set(slide.associated_images) == {"thumbnail", "label", "macro"}
            label = slide.associated_image("label")
            assert label.ndim == 3 and label.shape[2] == 3
            with pytest.raises(KeyError, match="has no associated image"):
                slide.associated_image("overview")


def test_describe_is_json_ready(cmu_svs):
    import json

    with open_slide(cmu_svs) as slide:
        info = json.loads(json.dumps(slide.describe()))
    assert info["mpp"] == pytest.approx(0.499)
    assert info["backend"]["backend"] == "openslide"


def test_tiffslide_matches_raw_tiffslide(cmu_svs):
    raw = tiffslide.TiffSlide(str(cmu_svs)).read_region((300, 400), 0, (128, 96), as_array=True)
    with open_slide(cmu_svs, backend="tiffslide") as slide:
        np.testing.assert_array_equal(slide.read_region((300, 400), 0, (128, 96)), raw)
