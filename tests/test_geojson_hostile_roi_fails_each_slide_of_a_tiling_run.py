"""Tiling with a hostile ``roi`` fails each slide with the GeoJSON error's line, not a raw error."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tiling import TilingConfig, tile_cohort

GOOD = [[0, 0], [2000, 0], [2000, 2000], [0, 2000], [0, 0]]


def _collection(bad_feature: str) -> str:
    good = json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [GOOD]}})
    return '{"type": "FeatureCollection", "features": [' + good + ", " + bad_feature + "]}"


HOSTILE = {
    "nested": (
        _collection(
            '{"type": "Feature", "id": "deep", "geometry": {"type": "Polygon", "coordinates": '
            + "[" * 50_000
            + "]" * 50_000
            + "}}"
        ),
        "feature 1 is nested too deeply",
    ),
    "nan": (
        _collection(
            '{"type": "Feature", "id": "n", "geometry": {"type": "Polygon", '
            '"coordinates": [[[0, 0], [NaN, 0], [5, 5], [0, 0]]]}}'
        ),
        "feature 1: a Polygon coordinate is not finite",
    ),
    "huge_integer": (
        _collection(
            '{"type": "Feature", "geometry": {"type": "Polygon", '
            '"coordinates": [[[0, 0], [' + "9" * 400 + ", 0], [5, 5], [0, 0]]]}}"
        ),
        "feature 1: Polygon coordinates must be numbers",
    ),
    "truncated": (_collection("{}")[:-30], "is it truncated?"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_slide_fails_with_the_one_line_geojson_error(tmp_path, cmu_svs, name):
    text, expected = HOSTILE[name]
    roi = tmp_path / f"{name}.geojson"
    roi.write_text(text)
    manifest = tmp_path / "manifest.csv"
    rows = [{"slide_id": slide_id, "path": str(cmu_svs)} for slide_id in ("a", "b")]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = TilingConfig(mpp=2.0, tile_px=64, roi=str(roi))

    report = tile_cohort(manifest, tmp_path / "project", config, executor="local", progress=False)

    assert [r.status for r in report.results] == ["failed", "failed"]
    for outcome in report.results:
        assert outcome.error.startswith(f"{roi}: "), outcome.error
        assert expected in outcome.error
        assert "\n" not in outcome.error and "Traceback" not in outcome.error
        for raw in ("RecursionError", "GEOSException", "ValueError", "JSONDecodeError"):
            assert raw not in outcome.error
        assert outcome.n_tiles == 0
    status = json.loads((tmp_path / "project" / "status" / "tile" / "a.json").read_text())
    assert expected in json.dumps(status)
