"""Slides read from, and stores written to, S3-compatible storage (a local moto server).

Slides are read on the workers straight from ``s3://`` (TiffSlide over fsspec);
stores are built in a local work folder and uploaded with their commit marker
last. A second run with an empty work folder, after one store lost its marker
(a run killed mid-upload), redoes only that slide and never downloads or
rewrites the finished ones.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import zarr
from cluster_fixtures import private_ray

import cluster
from slideflow_core.store import part_state
from tiling import TilingConfig

pytestmark = pytest.mark.integration

TILING = TilingConfig(mpp=1.0, tile_px=128, shard_tiles=64, band_tiles=256)


def test_pipeline_on_s3_uploads_marker_last_and_resumes(s3, cmu_svs, tmp_path):
    s3.mkdir("slides")
    s3.mkdir("results")
    s3.put_file(str(cmu_svs), "slides/cohort/CMU-1.svs")
    ids = ["cmu-0", "cmu-1", "cmu-2"]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"slide_id": ids, "path": ["s3://slides/cohort/CMU-1.svs"] * 3}).to_csv(
        manifest, index=False
    )
    run_dir = "s3://results/project"
    config = cluster.PipelineConfig(
        run_dir=run_dir, settings={"tile": TILING}, work_dir=str(tmp_path / "work1"), batch_slides=2
    )
    url = {sid: f"{run_dir}/stores/{sid}.zarr" for sid in ids}

    with private_ray():  # workers inherit the S3 endpoint from this environment
        first = cluster.run(manifest, config, num_cpus=2, progress=False)
        assert first.ok, str(first)
        assert [(s.stage, s.done) for s in first.stages] == [("tile", 3), ("upload", 3)]
        for sid in ids:
            assert part_state(url[sid], "tiling", TILING.identity()) == "complete"
        assert not list((tmp_path / "work1" / "stores").glob("*.zarr"))  # local copies dropped
        report = json.loads(s3.cat_file("results/project/pipeline/report.json"))
        assert report["ok"]

        store = zarr.open_group(zarr.storage.FsspecStore.from_url(url["cmu-0"]), mode="r")
        n_tiles = store.attrs["parts"]["tiling"]["n_tiles"]
        assert store["tiles"].shape == (n_tiles, 128, 128, 3) and n_tiles > 0
        assert store["coords"].shape == (n_tiles, 2)
        assert int(store["tiles"][0].min()) < 255  # real pixels, not the fill value

        # A run killed between cmu-2's data and its marker: the data is there, the marker not.
        s3.rm("results/project/stores/cmu-2.zarr/zarr.json")
        assert part_state(url["cmu-2"], "tiling", TILING.identity()) == "missing"
        untouched = {sid: s3.info(f"{url[sid]}/zarr.json")["ETag"] for sid in ids[:2]}
        stamps = {sid: s3.info(f"{url[sid]}/zarr.json")["LastModified"] for sid in ids[:2]}

        fresh = replace(config, work_dir=str(tmp_path / "work2"))  # another machine
        again = cluster.run(manifest, fresh, num_cpus=2, progress=False)
    assert again.ok, str(again)
    tile = {o.slide_id: o.status for o in again.states.outcomes("tile")}
    assert tile == {"cmu-0": "skipped", "cmu-1": "skipped", "cmu-2": "done"}
    upload = {o.slide_id: o.status for o in again.states.outcomes("upload")}
    assert upload == {"cmu-0": "skipped", "cmu-1": "skipped", "cmu-2": "done"}
    assert not (tmp_path / "work2" / "stores" / "cmu-0.zarr").exists()  # never downloaded
    for sid in ids[:2]:
        info = s3.info(f"{url[sid]}/zarr.json")
        assert (info["ETag"], info["LastModified"]) == (untouched[sid], stamps[sid])
    assert part_state(url["cmu-2"], "tiling", TILING.identity()) == "complete"
