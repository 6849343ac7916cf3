"""A run that scored no tile of a slide (no tile passed QC) exports its tiles without scores."""

from __future__ import annotations

import json

import numpy as np
from overlay_stores import make_store

from slideflow_core.features import write_attention, write_features
from slideflow_core.geojson import export_store


def test_tiles_of_a_slide_with_an_empty_run_export_without_scores(tmp_path):
    store = make_store(tmp_path, run=None)
    none = np.zeros(0, np.int64)
    with write_features(
        store, "m", tile_index=none, coords=np.zeros((0, 2), np.int64), dim=2, info={"identity": {}}
    ):
        pass
    write_attention(store, "empty", np.zeros(0, np.float32), model_id="m", info={"head": "abmil"})

    summary = export_store(store, tmp_path / "S1.geojson", what=("tiles",), run="empty")

    features = json.loads((tmp_path / "S1.geojson").read_text())["features"]
    assert summary.counts["tiles"] == len(features) == 24
    assert not any("attention" in f["properties"].get("measurements", {}) for f in features)
