"""The synthetic slide writer: readable by both backends, faithful to its ground truth."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openslide
import pytest
import shapely
import tiffslide

from slideflow_core.slides import open_slide
from slideflow_core.synthetic import (
    SyntheticSlideSpec,
    SyntheticTruth,
    rasterize,
    write_synthetic_slide,
)
from slideflow_core.synthetic import writer as writer_module
from slideflow_core.synthetic.pyramid import level_sizes

SPEC = SyntheticSlideSpec(
    width_px=4096, height_px=3072, seed=7, n_tissue_regions=3, n_pen_marks=2, n_blur_regions=1
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticTruth]:
    path = tmp_path_factory.mktemp("synthetic") / "slide.svs"
    return path, write_synthetic_slide(path, SPEC)


@pytest.fixture(scope="module")
def backends(written: tuple[Path, SyntheticTruth]):
    path, _ = written
    with openslide.OpenSlide(str(path)) as osr, tiffslide.TiffSlide(path) as tsr:
        yield osr, tsr


def _rgb(image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.int16)


def test_both_backends_read_geometry_and_calibration(written, backends) -> None:
    path, truth = written
    osr, tsr = backends
    assert osr.properties["openslide.vendor"] == "aperio"
    assert tsr.properties["tiffslide.vendor"] == "aperio"
    assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(SPEC.mpp, abs=1e-6)
    assert float(tsr.properties["tiffslide.mpp-x"]) == pytest.approx(SPEC.mpp, abs=1e-6)
    expected = level_sizes(SPEC.width_px, SPEC.height_px, SPEC.tile_px, SPEC.level_downsample)
    assert osr.level_dimensions == tsr.level_dimensions == tuple(expected)
    assert osr.level_count == tsr.level_count == len(expected) == 3
    assert {"thumbnail", "label", "macro"} <= set(osr.associated_images)
    assert {"thumbnail", "label", "macro"} <= set(tsr.associated_images)
    assert (truth.width_px, truth.height_px) == osr.dimensions
    for backend in ("openslide", "tiffslide"):
        with open_slide(path, backend=backend) as slide:
            assert slide.mpp == pytest.approx(SPEC.mpp, abs=1e-6)
            assert slide.level_dimensions == tuple(expected)
            assert slide.read_region((1000, 1000), 1, (64, 32)).shape == (32, 64, 3)


def test_backends_decode_identical_pixels(backends) -> None:
    osr, tsr = backends
    rng = np.random.default_rng(0)
    for level in range(osr.level_count):
        width, height = osr.level_dimensions[level]
        downsample = round(osr.level_downsamples[level])
        for _ in range(3):
            w, h = min(width, 300), min(height, 200)
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            location = (x * downsample, y * downsample)
            a = _rgb(osr.read_region(location, level, (w, h)))
            b = _rgb(tsr.read_region(location, level, (w, h)))
            np.testing.assert_array_equal(a, b)


def test_rendered_tissue_matches_truth(written, backends) -> None:
    _, truth = written
    _, tsr = backends
    level = 2
    pixels = _rgb(tsr.read_region((0, 0), level, tsr.level_dimensions[level]))
    saturation = (pixels.max(axis=2) - pixels.min(axis=2)) / np.maximum(pixels.max(axis=2), 1)
    seen = saturation > 0.08
    expected = truth.tissue_mask(pixels.shape[:2])
    # Ink is saturated too; judge only where there is no pen mark.
    valid = ~truth.pen_mask(pixels.shape[:2])
    iou = (seen & expected & valid).sum() / ((seen | expected) & valid).sum()
    assert expected.mean() > 0.1
    assert iou >= 0.9


def test_nuclei_lie_in_tissue_and_render_dark_purple(written, backends) -> None:
    _, truth = written
    osr, _ = backends
    assert truth.n_nuclei > 100
    assert shapely.contains_xy(truth.tissue, truth.nuclei[:, 0], truth.nuclei[:, 1]).all()
    area_mm2 = truth.tissue.area * truth.mpp**2 / 1e6
    assert truth.n_nuclei / area_mm2 == pytest.approx(SPEC.nuclei_per_mm2, rel=0.1)
    # Under ink or blur a nucleus is tinted or smeared; check the ones in plain view.
    hidden = shapely.union_all([truth.pen_marks, truth.blur_regions]).buffer(30)
    plain = ~shapely.contains_xy(hidden, truth.nuclei[:, 0], truth.nuclei[:, 1])
    sample = truth.nuclei[plain][:200]
    colours = np.array(
        [_rgb(osr.read_region((int(x), int(y)), 0, (1, 1)))[0, 0] for x, y in sample]
    )
    r, g, b = colours.T
    assert np.mean((colours.mean(axis=1) < 170) & (b > g) & (r > g)) > 0.95


def test_blur_regions_are_smoother_than_sharp_tissue(written, backends) -> None:
    _, truth = written
    osr, _ = backends

    def detail(geometry: shapely.Geometry) -> float:
        inner = geometry.buffer(-40).difference(truth.pen_marks.buffer(40))
        x, y = inner.representative_point().coords[0]
        patch = _rgb(osr.read_region((int(x) - 32, int(y) - 32), 0, (64, 64))).mean(axis=2)
        return float(np.abs(np.diff(patch, axis=1)).mean())

    sharp = truth.tissue.difference(truth.blur_regions.buffer(100))
    assert not truth.blur_regions.is_empty
    assert detail(truth.blur_regions) < 0.5 * detail(sharp)


def test_truth_round_trips_through_files(written, tmp_path: Path) -> None:
    _, truth = written
    saved = truth.save(tmp_path / "truth.json")
    assert json.loads(saved.read_text())["n_nuclei"] == truth.n_nuclei
    loaded = SyntheticTruth.load(saved)
    for name in ("tissue", "pen_marks", "blur_regions"):
        assert getattr(loaded, name).equals_exact(getattr(truth, name), 0.0)
    for name in ("nuclei", "nuclei_radius_px", "nuclei_axis_ratio", "nuclei_angle_rad"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(truth, name))
    assert loaded.spec == truth.spec
    assert (loaded.width_px, loaded.height_px, loaded.mpp) == (4096, 3072, 0.25)


def test_truth_masks_follow_level_geometry(written) -> None:
    _, truth = written
    assert truth.tissue_mask(4).shape == (3072 // 4, 4096 // 4)
    assert truth.tissue_mask((30, 40)).shape == (30, 40)
    # A mask at full resolution and one coarser agree on the covered fraction.
    fine, coarse = truth.tissue_mask(8), truth.tissue_mask(32)
    assert fine.mean() == pytest.approx(coarse.mean(), abs=0.01)
    assert fine.mean() == pytest.approx(truth.tissue.area / (4096 * 3072), abs=0.01)


def test_rasterize_sets_pixels_whose_centres_are_inside(written) -> None:
    _, truth = written
    for geometry in (truth.tissue, truth.pen_marks, truth.blur_regions):
        for shape in ((77, 101), (384, 512)):
            mask = rasterize(geometry, (truth.width_px, truth.height_px), shape)
            rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
            x = (cols + 0.5) * truth.width_px / shape[1]
            y = (rows + 0.5) * truth.height_px / shape[0]
            np.testing.assert_array_equal(mask, shapely.contains_xy(geometry, x, y))


def test_unusual_mpp_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "odd.svs"
    write_synthetic_slide(path, width_px=512, height_px=512, mpp=0.123456, associated_images=False)
    with openslide.OpenSlide(str(path)) as osr:
        assert float(osr.properties["openslide.mpp-x"]) == 0.123456
        assert set(osr.associated_images) == {"thumbnail"}


def test_same_seed_same_file_and_worker_processes_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SyntheticSlideSpec(width_px=1536, height_px=1024, seed=3)
    in_process = write_synthetic_slide(tmp_path / "a.tiff", spec, workers=1)
    # Force the process pool even for a small slide.
    monkeypatch.setattr(writer_module, "_MIN_TILES_FOR_WORKERS", 0)
    pooled = write_synthetic_slide(tmp_path / "b.tiff", spec, workers=2)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.tiff", "b.tiff")]
    assert digest[0] == digest[1]
    np.testing.assert_array_equal(in_process.nuclei, pooled.nuclei)
    other = write_synthetic_slide(tmp_path / "c.tiff", spec, seed=4, workers=1)
    assert not other.tissue.equals(in_process.tissue)
    assert not list(tmp_path.glob(".*")), "temporary files left behind"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width_px": -5}, "width_px"),
        ({"height_px": 100}, "height_px"),
        ({"mpp": 0.0}, "mpp"),
        ({"mpp": float("nan")}, "mpp"),
        ({"tile_px": 250}, "multiple of 16"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"seed": -1}, "seed"),
        ({"nuclei_per_mm2": -1.0}, "nuclei_per_mm2"),
        ({"nucleus_diameter_um": (10.0, 6.0)}, "min <= max"),
        ({"level_downsample": 3}, "divide tile_px"),
        ({"n_pen_marks": 1.5}, "n_pen_marks"),
        ({"width_px": True}, "width_px"),
        ({"n_tumour_regions": -1}, "n_tumour_regions"),
        ({"tumour_radius_um": (300.0, 100.0)}, "tumour_radius_um must be"),
        ({"tumour_nucleus_diameter_um": 9.0}, "tumour_nucleus_diameter_um must be"),
    ],
)
def test_invalid_specs_raise_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticSlideSpec(**overrides)


def test_unknown_override_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="widht_px"):
        write_synthetic_slide(tmp_path / "x.svs", widht_px=1024)


# Runs in the default suite (about 15 s): the 50k x 50k claim is tested on every CI run.
def test_large_slide_streams_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "large.svs"
    script = textwrap.dedent(
        f"""
        import json, re, resource
        from pathlib import Path
        from slideflow_core.synthetic import write_synthetic_slide
        if __name__ == "__main__":
            write_synthetic_slide({str(path)!r}, width_px=50_000, height_px=50_000)
            # ru_maxrss survives exec, so it would report the (large) test runner that
            # started this process; VmHWM belongs to this process image alone.
            status = Path("/proc/self/status").read_text()
            own = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
            workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            print(json.dumps([own, workers]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    peak_main, peak_worker = json.loads(result.stdout.strip().splitlines()[-1])
    assert peak_main < 1.5e9
    assert peak_worker < 1.5e9
    with openslide.OpenSlide(str(path)) as osr, tiffslide.TiffSlide(path) as tsr:
        assert osr.dimensions == tsr.dimensions == (50_000, 50_000)
        assert osr.level_dimensions == tsr.level_dimensions
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
