"""A pipeline with the export stage on an S3 run directory (a local moto server): a rerun
from another machine knows each slide's export is current from the record on S3, so it
neither downloads the stores nor exports them again."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from cluster_fixtures import private_ray

import cluster
from tiling import TilingConfig

pytestmark = pytest.mark.integration

TILING = TilingConfig(mpp=2.0, tile_px=128, shard_tiles=64, band_tiles=256)


def test_a_rerun_skips_exported_slides_on_s3_without_downloading(s3, cmu_svs, tmp_path):
    s3.mkdir("slides-export")
    s3.mkdir("results-export")
    s3.put_file(str(cmu_svs), "slides-export/CMU.svs")
    ids = ["a", "b"]
    manifest = tmp_path / "manifest.csv"
    rows = {"slide_id": ids, "path": ["s3://slides-export/CMU.svs"] * 2}
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = cluster.PipelineConfig(
        run_dir="s3://results-export/project",
        stages=("tile", "export"),
        settings={"tile": TILING, "export": {"what": ["tissue", "tiles"]}},
        work_dir=str(tmp_path / "work1"),
    )
    with private_ray():
        first = cluster.run(manifest, config, num_cpus=2, progress=False)
        assert first.ok, str(first)
        for slide_id in ids:
            assert s3.exists(f"results-export/project/exports/{slide_id}.export.json")
        fresh = replace(config, work_dir=str(tmp_path / "work2"))  # another machine
        again = cluster.run(manifest, fresh, num_cpus=2, progress=False)
    assert again.ok, str(again)
    for stage in ("tile", "export", "upload"):
        assert {o.status for o in again.states.outcomes(stage)} == {"skipped"}, stage
    assert not list((tmp_path / "work2" / "stores").glob("*.zarr"))  # nothing downloaded
