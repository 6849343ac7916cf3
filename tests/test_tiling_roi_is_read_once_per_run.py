"""A run reads its ROI GeoJSON once, however many slides it tiles; each keeps only tiles inside."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import tiling.job
from tiling import TilingConfig, open_store, tile_cohort

ROI = [[0, 0], [1200, 0], [1200, 1500], [0, 1500], [0, 0]]


def test_roi_is_parsed_once_for_every_slide_of_a_run(tmp_path, cmu_svs, monkeypatch):
    roi = tmp_path / "roi.geojson"
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ROI]}}
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    manifest = tmp_path / "manifest.csv"
    rows = [{"slide_id": slide_id, "path": str(cmu_svs)} for slide_id in ("a", "b", "c")]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    calls = []
    original = tiling.job.read_roi
    monkeypatch.setattr(tiling.job, "read_roi", lambda path: calls.append(path) or original(path))
    config = TilingConfig(mpp=2.0, tile_px=64, roi=str(roi), store_pixels=False)

    report = tile_cohort(manifest, tmp_path / "project", config, executor="local", progress=False)

    assert report.ok, str(report)
    assert calls == [str(roi)]
    for slide_id in ("a", "b", "c"):
        store = open_store(tmp_path / "project" / "stores" / f"{slide_id}.zarr")
        coords = store.coords
        assert store.info["level"] == 0  # the tile's side in level-0 px is its read_px
        centres = coords + store.info["read_px"] / 2
        assert len(coords) > 4
        assert (centres[:, 0] < 1200).all() and (centres[:, 1] < 1500).all()
        assert np.ptp(coords[:, 1]) > 0
