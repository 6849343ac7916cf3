"""TRIDENT's and CLAM's own reading rules, applied to our .h5 exports, read the tiles we stored.

The rules are written here from each tool's source (TRIDENT ``WSI.extract_patch_features``
→ ``WSIPatcher``; CLAM ``extract_features_fp.py`` → ``Whole_Slide_Bag_FP``), reading the
slide with OpenSlide and PIL as they do. A wrong attribute shows as a shifted or rescaled
field of view (mean |difference| of tens of grey levels); resampling alone stays under one
grey level wherever the resize is the one that matters (a 40× slide tiled at 20×).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest

from tiling import TilingConfig, export_h5, open_store, tile_slide

# Tiles compared per slide: enough to cover the slide, few enough to stay fast.
_SAMPLE = 24


def trident_reads(slide_path: Path, h5_path: Path, rows: np.ndarray) -> np.ndarray:
    """Tiles as TRIDENT's patch-feature extraction reads them from its coords file."""
    with h5py.File(h5_path, "r") as handle:
        attrs = dict(handle["coords"].attrs)
        coords = handle["coords"][:][rows]
    patch_size = int(attrs["patch_size"])
    src_mag, dst_mag = attrs["level0_magnification"], attrs["target_magnification"]
    # WSIPatcher: pixel sizes from magnifications, level-0 patch, then a level.
    downsample = (10 / dst_mag) / (10 / src_mag)
    patch_size_src = round(patch_size * downsample)
    slide = openslide.OpenSlide(str(slide_path))
    level = _trident_level(slide.level_downsamples, downsample)
    patch_size_level = round(patch_size_src / int(slide.level_downsamples[level]))
    out = []
    for x, y in coords:
        region = slide.read_region((int(x), int(y)), level, (patch_size_level,) * 2)
        out.append(np.asarray(region.convert("RGB").resize((patch_size, patch_size))))
    slide.close()
    return np.stack(out)


def _trident_level(level_downsamples: tuple[float, ...], downsample: float) -> int:
    """``get_best_level_and_custom_downsample(downsample, tolerance=0.1)``'s level."""
    for level, value in enumerate(level_downsamples):
        if abs(value - downsample) <= 0.1:
            return level
    below = [level for level, value in enumerate(level_downsamples) if value <= downsample]
    return max(below)


def clam_reads(slide_path: Path, h5_path: Path, rows: np.ndarray, out_px: int) -> np.ndarray:
    """Tiles as CLAM reads them, resized to ``--target_patch_size out_px``."""
    with h5py.File(h5_path, "r") as handle:
        level = int(handle["coords"].attrs["patch_level"])
        size = int(handle["coords"].attrs["patch_size"])
        coords = handle["coords"][:][rows]
    slide = openslide.OpenSlide(str(slide_path))
    out = []
    for coord in coords:
        image = slide.read_region(tuple(int(c) for c in coord), level, (size, size))
        out.append(np.asarray(image.convert("RGB").resize((out_px, out_px))))
    slide.close()
    return np.stack(out)


def _stored(store: Path, coords: np.ndarray) -> np.ndarray:
    """Our stored tiles at ``coords`` (an export's coordinates, matched to store rows)."""
    tiles = open_store(store)
    index = {tuple(c): i for i, c in enumerate(tiles.coords.tolist())}
    return tiles.read_tiles([index[tuple(c)] for c in coords.tolist()])


def _sample(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, _SAMPLE)).round().astype(int))


def _mean_abs_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.int16) - theirs.astype(np.int16)).mean())


def _compare(slide: Path, store: Path, tmp: Path) -> dict[str, float]:
    """Mean |difference| of each consumer's reads against our stored tiles."""
    tile_px = int(open_store(store).info["tile_px"])
    result = {}
    for layout in ("trident", "clam"):
        path = export_h5(store, tmp / layout, layout=layout)
        with h5py.File(path, "r") as handle:
            coords = handle["coords"][:]
        rows = _sample(len(coords))
        assert len(rows), f"{slide.name}: no kept tiles to compare"
        if layout == "trident":
            theirs = trident_reads(slide, path, rows)
        else:
            theirs = clam_reads(slide, path, rows, tile_px)
        result[layout] = _mean_abs_difference(_stored(store, coords[rows]), theirs)
    return result


@pytest.fixture(scope="module", params=["zstd", "auto"])
def forty_x_store(request, synthetic_slide, tmp_path_factory):
    """The 0.25 µm/px (40×, AppMag 40) synthetic slide tiled at 0.5 µm/px: every tile resized.

    ``zstd`` stores the resized pixels losslessly; ``auto`` (the default) stores them as
    JPEG q90, which adds its own error on top of any reader's resampling.
    """
    path, _ = synthetic_slide
    store = tmp_path_factory.mktemp("h5rules") / "syn.zarr"
    config = TilingConfig(mpp=0.5, tile_px=256, codec=request.param)
    tile_slide(path, store, config, slide_id="syn")
    return path, store


def test_a_40x_slide_tiled_at_20x_reads_the_same_by_both_rules(forty_x_store, tmp_path):
    slide, store = forty_x_store
    assert open_store(store).info["read_px"] == 512  # resized 512 -> 256
    differences = _compare(slide, store, tmp_path)
    # Lossless: resampling alone (theirs PIL bicubic, ours area), measured 0.50.
    # JPEG q90 (default codec): that plus the codec's error, measured 1.52.
    lossless = open_store(store).info["config"]["codec"] == "zstd"
    bound = 1.0 if lossless else 2.5
    assert differences["trident"] < bound, differences
    assert differences["clam"] < bound, differences


def test_trident_layout_has_integer_magnifications_and_its_folder(forty_x_store, tmp_path):
    _, store = forty_x_store
    path = export_h5(store, tmp_path, layout="trident")
    assert path == tmp_path / "20x_256px_0px_overlap" / "patches" / "syn_patches.h5"
    with h5py.File(path, "r") as handle:
        attrs = dict(handle["coords"].attrs)
    assert attrs["level0_magnification"] == 40 and attrs["target_magnification"] == 20
    assert isinstance(attrs["target_magnification"], np.integer)
    assert attrs["patch_size"] == 256  # at the target magnification
    assert attrs["patch_size_level0"] == 512
    assert "patch_level" not in attrs  # a CLAM key would make TRIDENT's meaning ambiguous


def test_clam_layout_reads_patch_size_at_patch_level(forty_x_store, tmp_path):
    _, store = forty_x_store
    path = export_h5(store, tmp_path, layout="clam")
    assert path == tmp_path / "patches" / "syn.h5"
    with h5py.File(path, "r") as handle:
        attrs = dict(handle["coords"].attrs)
    assert attrs["patch_size"] == 512 and attrs["patch_level"] == 0
    assert "target_magnification" not in attrs  # TRIDENT would take patch_size as target px


def test_qc_kept_tiles_by_default_all_tiles_on_request(forty_x_store, tmp_path):
    _, store = forty_x_store
    tiles = open_store(store)
    keep = tiles.qc()["keep"].to_numpy()
    assert 0 < keep.sum() < len(keep)
    with h5py.File(export_h5(store, tmp_path / "a"), "r") as handle:
        np.testing.assert_array_equal(handle["coords"][:], tiles.coords[keep])
    with h5py.File(export_h5(store, tmp_path / "b", all_tiles=True), "r") as handle:
        np.testing.assert_array_equal(handle["coords"][:], tiles.coords)


@pytest.mark.parametrize(
    ("name", "mpp"),
    [
        ("CMU-1-Small-Region.svs", 0.5),  # 0.499 µm/px within tolerance: no resize
        ("CMU-1-Small-Region.svs", 1.0),  # 513 px read per 256-px tile
        ("hamamatsu_test3-DAPI-2-387.ndpi", 0.5),  # level 1 (0.456 µm/px) resized 1.1x
    ],
)
def test_real_slides_read_the_same_by_both_rules(slides_dir, tmp_path, name, mpp):
    slide = slides_dir / name
    store = tmp_path / "s.zarr"
    config = TilingConfig(
        mpp=mpp, tile_px=256, tissue_method="otsu", min_tissue_fraction=0.0, codec="zstd"
    )
    tile_slide(slide, store, config, slide_id="real")
    differences = _compare(slide, store, tmp_path)
    # Same field of view: only the resampling filter differs (theirs PIL bicubic, ours area
    # averaging), which on CMU's sharp real tissue at a 2x reduction is ~2 grey levels.
    # A wrong window (the bug this guards) differs by tens.
    bound = 1.0 if open_store(store).info["read_px"] <= 300 else 3.0
    assert differences["trident"] < bound, differences
    assert differences["clam"] < bound, differences


def test_cmu_at_1_mpp_reads_exactly_our_window(cmu_svs, tmp_path):
    """Where resampling differs, the window each tool reads is still exactly ours."""
    store = tmp_path / "s.zarr"
    tile_slide(cmu_svs, store, TilingConfig(mpp=1.0, tile_px=256), slide_id="cmu")
    tiles = open_store(store)
    path = export_h5(store, tmp_path, layout="trident")
    with h5py.File(path, "r") as handle:
        attrs = dict(handle["coords"].attrs)
    assert attrs["level0_magnification"] == 20  # AppMag 20
    # 513 level-0 px per tile: 20 * 256 / 513, not the integer 10 (which would read 512).
    assert attrs["target_magnification"] == pytest.approx(20 * 256 / 513)
    patch_size_src = round(
        attrs["patch_size"] * attrs["level0_magnification"] / attrs["target_magnification"]
    )
    assert patch_size_src == tiles.info["read_px"] == attrs["patch_size_level0"] == 513
