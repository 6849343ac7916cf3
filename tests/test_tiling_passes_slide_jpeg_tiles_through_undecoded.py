"""A grid on the slide's own JPEG tiles copies them into the store undecoded, equal to read_region.

CMU-1-Small-Region.svs stores 240 px JPEG tiles (Aperio: RGB components, shared
JPEG tables), so 240 px tiles at its own 0.499 µm/px are its stored tiles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slideflow_core.slides import open_slide
from tiling import TilingConfig, open_cohort, open_store, tile_slide
from tiling.pixels import CodecError
from tiling.reader import TileReader

SFC = str(Path(sys.executable).with_name("sfc"))  # the installed command, as a user runs it

NATIVE = TilingConfig(mpp=0.499, tile_px=240, shard_tiles=16)


@pytest.fixture(scope="module")
def passthrough_store(cmu_svs, tmp_path_factory):
    store = tmp_path_factory.mktemp("passthrough") / "cmu.zarr"
    assert tile_slide(cmu_svs, store, NATIVE).status == "done"
    return store


def test_aligned_grid_is_stored_as_the_slides_own_jpeg_tiles(passthrough_store):
    info = open_store(passthrough_store).info
    assert info["codec"] == "jpeg-passthrough"
    assert info["identity"]["codec"] == "auto"
    assert info["qc_scale"] == 8


def test_passed_through_tiles_equal_read_region_pixel_for_pixel(passthrough_store, cmu_svs):
    tiles = open_store(passthrough_store)
    assert len(tiles) > 40
    picks = np.linspace(0, len(tiles) - 1, 10).astype(int)
    stored = tiles.read_tiles(picks)
    with open_slide(cmu_svs) as slide:
        for tile, i in zip(stored, picks, strict=True):
            x, y = (int(v) for v in tiles.coords[i])
            np.testing.assert_array_equal(tile, slide.read_region((x, y), 0, (240, 240)))
    np.testing.assert_array_equal(open_cohort([passthrough_store]).tiles[picks[3]], stored[3])


def test_store_holds_the_slides_entropy_coded_bytes_unchanged(passthrough_store, cmu_svs):
    tiles = open_store(passthrough_store)
    with tifffile.TiffFile(cmu_svs) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        x, y = (int(v) for v in tiles.coords[5])
        index = y // 240 * across + x // 240
        tif.filehandle.seek(page.dataoffsets[index])
        raw = tif.filehandle.read(page.databytecounts[index])
        slide_bytes = sum(page.databytecounts[i] for i in _stored_indices(tiles.coords, across))
    shard_files = list((passthrough_store / "tiles").rglob("c/*/0/0/0"))
    assert any(raw[2:] in path.read_bytes() for path in shard_files)  # all but the SOI marker
    store_bytes = sum(path.stat().st_size for path in shard_files)
    assert store_bytes <= 1.1 * slide_bytes


def _stored_indices(coords: np.ndarray, across: int) -> list[int]:
    return [int(y) // 240 * across + int(x) // 240 for x, y in coords]


def test_plain_zarr_in_a_fresh_process_reads_the_store(passthrough_store, cmu_svs):
    # Only zarr: it finds the JPEG codec through the package's zarr.codecs entry point.
    code = (
        "import sys, zarr, numpy as np\n"
        f"tiles = zarr.open_group({str(passthrough_store)!r}, mode='r')['tiles']\n"
        "np.save(sys.stdout.buffer, tiles[2])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    import io

    tile = np.load(io.BytesIO(out.stdout))
    x, y = (int(v) for v in open_store(passthrough_store).coords[2])
    with open_slide(cmu_svs) as slide:
        np.testing.assert_array_equal(tile, slide.read_region((x, y), 0, (240, 240)))


def test_off_grid_tiles_are_reencoded_jpeg_within_a_psnr_bound(cmu_svs, tmp_path):
    store = tmp_path / "jpeg.zarr"
    lossless = tmp_path / "zstd.zarr"
    tile_slide(cmu_svs, store, TilingConfig(mpp=0.499, tile_px=128, shard_tiles=64))
    tile_slide(
        cmu_svs, lossless, TilingConfig(mpp=0.499, tile_px=128, shard_tiles=64, codec="zstd")
    )
    jpeg, exact = open_store(store), open_store(lossless)
    assert jpeg.info["codec"] == "jpeg"
    assert "240x240" in jpeg.info["codec_reason"]
    got, want = jpeg.read_tiles(slice(None)), exact.read_tiles(slice(None))
    assert _psnr(got, want) > 38  # measured 40.8 dB
    size = {
        p: sum(f.stat().st_size for f in (p / "tiles").rglob("*") if f.is_file())
        for p in (store, lossless)
    }
    assert size[store] <= 0.5 * size[lossless]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_a_2x_resize_decodes_at_half_scale_close_to_the_area_resize(cmu_svs, tmp_path):
    store = tmp_path / "half.zarr"
    config = TilingConfig(mpp=0.998, tile_px=120, shard_tiles=16)
    tile_slide(cmu_svs, store, config)
    tiles = open_store(store)
    assert tiles.info["dct_scale"] == 2 and tiles.info["codec"] == "jpeg"
    with open_slide(cmu_svs) as slide:
        level, read_px = tiles.info["level"], tiles.info["read_px"]
        area = TileReader(slide, level=level, read_px=read_px, tile_px=120)
        dct = TileReader(slide, level=level, read_px=read_px, tile_px=120, dct_scaling=True)
        by_area = np.concatenate([t for _, t in area.read(tiles.coords)])
        by_dct = np.concatenate([t for _, t in dct.read(tiles.coords)])
    assert dct.dct_scale == 2
    assert _psnr(by_dct, by_area) > 50  # measured 54 dB: mean |difference| 0.1 grey level
    assert _psnr(tiles.read_tiles(slice(None)), by_area) > 32  # measured 32.9 dB (q90 re-encode)


def test_asking_for_passthrough_off_the_tile_grid_is_one_error_with_a_hint(cmu_svs, tmp_path):
    config = TilingConfig(mpp=0.499, tile_px=128, codec="jpeg-passthrough")
    with pytest.raises(CodecError) as caught:
        tile_slide(cmu_svs, tmp_path / "x.zarr", config)
    assert str(cmu_svs) in str(caught.value) and "240x240" in str(caught.value)
    assert caught.value.hint


def test_coordinates_only_decodes_no_tile_in_full(cmu_svs, tmp_path, monkeypatch):
    from tiling.native import JpegTileDecoder

    full = []
    original = JpegTileDecoder.decode_tile

    def counting(self, index):
        full.append(self.level.scale == 1)
        return original(self, index)

    monkeypatch.setattr(JpegTileDecoder, "decode_tile", counting)
    store = tmp_path / "coords.zarr"
    tile_slide(cmu_svs, store, TilingConfig(mpp=0.499, tile_px=240, store_pixels=False))
    n = len(open_store(store))
    assert n > 40 and len(full) >= n
    # Only the 2x2 tiles that check the direct decoder against the backend, once for the
    # tiles' level and once for the QC images' level, when planning.
    assert sum(full) <= 8


def test_sfc_tile_passes_through_by_default_and_stores_losslessly_on_request(cmu_svs, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"slide_id,path\ncmu,{cmu_svs}\n")
    for codec, expected in (("auto", "jpeg-passthrough"), ("zstd", "zstd")):
        out = tmp_path / codec
        command = [SFC, "tile", str(manifest), "--out", str(out), "--target-mpp", "0.499"]
        command += ["--tile-px", "240", "--codec", codec, "--executor", "local", "--no-progress"]
        subprocess.run(command, check=True, capture_output=True)
        assert open_store(out / "stores" / "cmu.zarr").info["codec"] == expected


def test_padded_edge_tiles_are_reencoded_white_outside_the_slide(cmu_svs, tmp_path):
    store = tmp_path / "pad.zarr"
    config = TilingConfig(mpp=0.499, tile_px=240, edge="pad", min_tissue_fraction=0)
    tile_slide(cmu_svs, store, config)
    tiles = open_store(store)
    assert tiles.info["codec"] == "jpeg-passthrough"
    with open_slide(cmu_svs) as slide:
        width, height = slide.dimensions
    coords = tiles.coords
    crossing = np.flatnonzero((coords[:, 0] + 240 > width) | (coords[:, 1] + 240 > height))
    inside = np.flatnonzero((coords[:, 0] + 240 <= width) & (coords[:, 1] + 240 <= height))
    assert len(crossing) and len(inside)
    edge = tiles.read_tiles([crossing[0]])[0]
    x, y = (int(v) for v in coords[crossing[0]])
    outside = edge[:, width - x :] if x + 240 > width else edge[height - y :]
    assert outside.mean() > 253  # white, up to JPEG ringing at the slide's edge
    with open_slide(cmu_svs) as slide:
        assert _psnr(edge, slide.read_region((x, y), 0, (240, 240))) > 38
        x, y = (int(v) for v in coords[inside[-1]])
        expected = slide.read_region((x, y), 0, (240, 240))
    np.testing.assert_array_equal(tiles.read_tiles([inside[-1]])[0], expected)


def test_tiles_adjacent_in_the_file_are_read_in_one_pread_and_equal_single_reads(
    cmu_svs, monkeypatch
):
    import os

    import imagecodecs

    from tiling.native import JpegTileDecoder, find_jpeg_level

    level, _ = find_jpeg_level(str(cmu_svs), (2220, 2967))
    decoder = JpegTileDecoder(level)
    indices = [0, 1, 2, 3, 12, 11, 40, 40, 41, 129]  # runs, a step back, a repeat, the last
    expected = [
        level.complete(os.pread(decoder._fd(), int(level.bytecounts[i]), int(level.offsets[i])))
        for i in indices
    ]
    reads = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or pread(fd, n, at))
    assert decoder.encoded_tiles(indices) == expected
    assert len(reads) == 6  # 0-3, 12, 11, 40, 40-41, 129
    assert all(imagecodecs.jpeg8_decode(s).shape == (240, 240, 3) for s in expected)


def test_manifest_takes_the_writers_shard_checksums_which_match_the_files(passthrough_store):
    from slideflow_core.manifest import build_manifest, file_checksum
    from slideflow_core.store import read_store_attrs

    files = read_store_attrs(passthrough_store)["parts"]["tiling"]["manifest"]["files"]
    shards = sorted(key for key in files if key.startswith("tiles/c/"))
    assert len(shards) > 1
    for key in shards:  # the checksum the band computed from the bytes it wrote
        assert files[key] == [
            (passthrough_store / key).stat().st_size,
            file_checksum(passthrough_store / key),
        ]
    # A writer's record is trusted only for a file of the recorded size.
    key = shards[0]
    size = files[key][0]
    wrong = {key: (size, "00000000"), shards[1]: (files[shards[1]][0] + 1, "00000000")}
    manifest = build_manifest(passthrough_store, ["tiles"], known=wrong)["files"]
    assert manifest[key] == [size, "00000000"]
    assert manifest[shards[1]] == files[shards[1]]


def test_tiles_read_in_any_order_across_shards_equal_zarrs_own_reading(passthrough_store):
    import zarr

    picks = [40, 3, 20, 3, 17]  # four shards of 16 tiles, out of order, one twice
    array = zarr.open_array(str(passthrough_store / "tiles"), mode="r")
    expected = np.stack([array[i] for i in picks])
    np.testing.assert_array_equal(open_store(passthrough_store).read_tiles(picks), expected)
