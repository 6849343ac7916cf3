"""Embedding a project on Ray actors: features equal a plain forward, from pixels or the slide.

One project holds three kinds of store: pixels stored (a real slide and a synthetic
one), coordinates only (the real slide again, read lazily), and a coordinates-only
store whose slide file has gone (it must fail alone, with its error).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from embedding_project import tile_project

import embedders
from embedders import embed_cohort
from slideflow_core.features import list_parts, read_features
from tiling import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(ray_session, tmp_path_factory, cmu_svs, synthetic_slide):
    root = tmp_path_factory.mktemp("embed")
    gone = root / "gone.svs"
    shutil.copy(cmu_svs, gone)
    pixels = tile_project(
        root / "project",
        [
            {"slide_id": "cmu", "path": str(cmu_svs)},
            {"slide_id": "synthetic", "path": str(synthetic_slide[0])},
        ],
    )
    coords = tile_project(
        root / "coords",
        [
            {"slide_id": "cmu-coords", "path": str(cmu_svs)},
            {"slide_id": "broken", "path": str(gone)},
        ],
        store_pixels=False,
    )
    for name in ("cmu-coords", "broken"):
        (coords / "stores" / f"{name}.zarr").rename(pixels / "stores" / f"{name}.zarr")
    gone.unlink()
    report = embed_cohort(pixels, "handcrafted", batch_size=16, progress=False)
    return pixels, report


def test_features_equal_a_direct_forward_on_the_stored_tiles(project):
    root, _ = project
    reference = embedders.create("handcrafted", device="cpu")
    for slide_id in ("cmu", "synthetic"):
        store = open_store(root / "stores" / f"{slide_id}.zarr")
        keep = np.flatnonzero(store.qc()["keep"].to_numpy())
        assert 16 < len(keep) <= len(store)  # several batches of QC-kept tiles
        bag = read_features(store.path, "handcrafted")
        np.testing.assert_array_equal(bag.tile_index, keep)
        np.testing.assert_array_equal(bag.coords, store.coords[keep])
        expected = reference.embed(store.read_tiles(keep))
        np.testing.assert_allclose(bag.features, expected, rtol=1e-3, atol=1e-3)  # float16
        assert bag.info["identity"]["embedder"] == reference.identity()
        assert bag.info["pixels"] == "stored"


def test_coordinate_only_store_gives_the_same_features_as_the_pixel_store(project):
    root, _ = project
    from_pixels = read_features(root / "stores" / "cmu.zarr", "handcrafted")
    from_slide = read_features(root / "stores" / "cmu-coords.zarr", "handcrafted")
    assert from_slide.info["pixels"] == "read from the slide"
    np.testing.assert_array_equal(from_slide.coords, from_pixels.coords)
    np.testing.assert_allclose(from_slide.features, from_pixels.features, atol=1e-3)


def test_a_broken_slide_fails_alone_and_the_report_says_why(project):
    root, report = project
    status = {r.slide_id: r.status for r in report.results}
    assert status == {"broken": "failed", "cmu": "done", "cmu-coords": "done", "synthetic": "done"}
    (failure,) = report.failed
    assert "gone.svs" in failure.error
    text = str(report)
    assert "1 failed" in text and "3 done" in text and "tiles/s" in text
    saved = json.loads((root / "status" / "embed.json").read_text())
    assert saved["part"] == "features/handcrafted"
    assert saved["tiles_done"] == report.tiles_done > 0
    assert saved["info"]["dim"] == 87 and "CPU actor" in saved["info"]["executor"]
    per_slide = json.loads((root / "status" / "embed" / "broken.json").read_text())
    assert per_slide["status"] == "failed"
    done = json.loads((root / "status" / "embed" / "cmu.json").read_text())
    assert done["status"] == "done" and done["details"]["batch_size"] == 16
    assert "handcrafted" not in list_parts(root / "stores" / "broken.zarr")


def test_a_second_run_skips_every_complete_slide(project):
    root, _ = project
    again = embed_cohort(root, "handcrafted", batch_size=16, progress=False)
    status = {r.slide_id: r.status for r in again.results}
    assert status == {
        "broken": "failed",
        "cmu": "skipped",
        "cmu-coords": "skipped",
        "synthetic": "skipped",
    }
    assert again.tiles_done == 0
