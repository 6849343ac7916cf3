"""``cluster.run`` locally: tile then embed, per-slide states, a report, and a resuming rerun.

One broken slide fails tiling with its error and is ``blocked`` for embedding;
the others are tiled and embedded. The rerun skips every finished slide in
both stages (their parts are complete with the same configuration).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cluster_fixtures import TILING

import cluster
from slideflow_core.store import read_store_attrs

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tile_then_embed_records_states_and_the_rerun_skips_everything(
    ray_session, synthetic_slide, slides_dir, tmp_path
):
    slide, _ = synthetic_slide
    manifest = tmp_path / "manifest.csv"
    rows = [
        {"slide_id": "synth-a", "path": str(slide)},
        {"slide_id": "synth-b", "path": str(slide)},
        {"slide_id": "broken", "path": str(slides_dir / "unreadable.svs")},
    ]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = cluster.PipelineConfig(
        run_dir=str(tmp_path / "run"),
        stages=("tile", "embed"),
        settings={"tile": TILING, "embed": {"model": "handcrafted"}},
    )

    first = cluster.run(manifest, config, progress=False)

    assert not first.ok
    tile, embed = first.stages
    assert (tile.done, tile.failed, embed.done, embed.blocked) == (2, 1, 2, 1)
    assert tile.tiles > 0 and embed.tiles > 0 and tile.seconds > 0
    [failure] = first.failures
    assert failure["stage"] == "tile" and failure["slide_id"] == "broken"
    assert "unreadable.svs" in failure["error"]
    assert first.states.get("broken", "embed").status == "blocked"
    table = first.states.to_frame().set_index("slide_id")
    assert table.loc["synth-a"].tolist() == ["done", "done"]
    assert "broken" in str(first)  # the printed report names the failure

    run_dir = tmp_path / "run"
    parts = read_store_attrs(run_dir / "stores" / "synth-a.zarr")["parts"]
    assert parts["tiling"]["complete"] and parts["features/handcrafted"]["complete"]
    saved = json.loads((run_dir / "pipeline" / "report.json").read_text())
    assert saved["failures"] == first.failures
    assert cluster.PipelineConfig.from_yaml(run_dir / "pipeline" / "config.yaml") == config
    state = json.loads((run_dir / "pipeline" / "state.json").read_text())
    assert state["slides"]["synth-b"]["embed"]["status"] == "done"

    again = cluster.run(manifest, config, progress=False)

    statuses = {
        stage: {o.slide_id: o.status for o in again.states.outcomes(stage)}
        for stage in ("tile", "embed")
    }
    assert statuses["tile"] == {"synth-a": "skipped", "synth-b": "skipped", "broken": "failed"}
    assert statuses["embed"] == {"synth-a": "skipped", "synth-b": "skipped", "broken": "blocked"}
    assert again.stages[0].tiles == 0 and again.stages[1].tiles == 0  # nothing redone
