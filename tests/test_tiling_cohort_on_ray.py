"""Tiling a cohort on a real local Ray instance: bad slides fail alone, reruns resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from slideflow_core.store import read_store_attrs
from tiling import TilingConfig, open_cohort, open_store, tile_cohort

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, slides_dir, synthetic_slide):
    root = tmp_path_factory.mktemp("cohort")
    rows = [
        {"slide_id": "cmu-a", "path": str(slides_dir / "CMU-1-Small-Region.svs"), "label": "x"},
        {"slide_id": "cmu-b", "path": str(slides_dir / "CMU-1-Small-Region.svs"), "label": "y"},
        {"slide_id": "synthetic", "path": str(synthetic_slide[0]), "label": "x"},
        {"slide_id": "corrupt", "path": str(slides_dir / "unreadable.svs"), "label": "y"},
        {"slide_id": "uncalibrated", "path": str(slides_dir / "boxes.tiff"), "label": "x"},
        {"slide_id": "../../etc", "path": str(slides_dir / "small.svs"), "label": "y"},
    ]
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


CONFIG = TilingConfig(mpp=0.5, tile_px=128, shard_tiles=32, band_tiles=128)


def test_cohort_tiles_good_slides_and_reports_bad_ones(ray_session, manifest, tmp_path):
    report = tile_cohort(manifest, tmp_path, CONFIG, progress=False)
    status = {r.slide_id: r for r in report.results}
    assert {s: r.status for s, r in status.items()} == {
        "cmu-a": "done",
        "cmu-b": "done",
        "synthetic": "done",
        "corrupt": "failed",
        "uncalibrated": "failed",
        "../../etc": "failed",
    }
    assert "unreadable.svs" in status["corrupt"].error
    assert "mpp" in status["uncalibrated"].error
    assert "slide id" in status["../../etc"].error or "unsafe" in status["../../etc"].error
    assert not (tmp_path.parent / "etc").exists()
    # The synthetic slide has more tiles than one band: it was split across tasks.
    synthetic = open_store(tmp_path / "stores" / "synthetic.zarr")
    assert len(synthetic) > CONFIG.band_tiles
    assert synthetic.coords.shape == (len(synthetic), 2)
    assert len({tuple(c) for c in synthetic.coords.tolist()}) == len(synthetic)
    saved = json.loads((tmp_path / "status" / "tile" / "corrupt.json").read_text())
    assert saved["status"] == "failed"
    summary = pd.read_csv(tmp_path / "status" / "tile.csv")
    assert len(summary) == 6
    assert "failed" in str(report)
    view = open_cohort(tmp_path)
    assert set(view.table["slide_id"]) == {"cmu-a", "cmu-b", "synthetic"}


def test_rerun_skips_complete_slides_and_retries_failed_ones(ray_session, manifest, tmp_path):
    first = tile_cohort(manifest, tmp_path, CONFIG, progress=False)
    stamp = read_store_attrs(tmp_path / "stores" / "cmu-a.zarr")["parts"]["tiling"]["time"]
    second = tile_cohort(manifest, tmp_path, CONFIG, progress=False)
    statuses = {r.slide_id: r.status for r in second.results}
    assert statuses["cmu-a"] == statuses["synthetic"] == "skipped"
    assert statuses["corrupt"] == "failed"
    # A skipped slide still reports what its store holds.
    assert second.outcome("cmu-a").n_tiles == first.outcome("cmu-a").n_tiles > 0
    assert second.outcome("cmu-a").details["n_kept"] == first.outcome("cmu-a").details["n_kept"]
    assert read_store_attrs(tmp_path / "stores" / "cmu-a.zarr")["parts"]["tiling"]["time"] == stamp
    assert len(first.failed) == len(second.failed) == 3


def test_slide_travels_through_ray_and_reads_the_same(ray_session, cmu_svs):
    import numpy as np

    from slideflow_core.slides import open_slide

    slide = open_slide(cmu_svs, backend="tiffslide")

    @ray_session.remote
    def read(s):
        return s.read_at((200, 300), mpp=1.0, tile_px=64), s.backend_choice.backend

    tile, backend = ray_session.get(read.remote(slide))
    assert backend == "tiffslide"
    np.testing.assert_array_equal(tile, slide.read_at((200, 300), mpp=1.0, tile_px=64))
