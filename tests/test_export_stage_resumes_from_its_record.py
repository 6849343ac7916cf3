"""The export stage writes GeoJSON, heatmaps and a record last, and redoes only stale slides."""

from __future__ import annotations

import json

import numpy as np
import pytest
from overlay_stores import make_store

from slideflow_core.features import write_attention
from slideflow_core.geojson import read_geojson
from slideflow_core.geojson.stage import ExportConfig, ExportStage
from slideflow_core.stages import StageConfigError, create_stage, run_cohort


def _export(project, config=None, **kwargs):
    stage = ExportStage(config or ExportConfig(run="r1"))
    return run_cohort(stage, project, executor="local", progress=False, **kwargs)


@pytest.fixture
def project(tmp_path, cmu_svs):
    for slide_id in ("A", "B"):
        make_store(tmp_path, slide_id, slide_path=cmu_svs, dimensions=(2220, 2967))
    return tmp_path


def test_each_slide_gets_geojson_heatmap_and_a_record(project):
    report = _export(project)
    assert [r.status for r in report.results] == ["done", "done"]
    exports = project / "exports"
    assert sorted(p.name for p in exports.iterdir()) == [
        "A.export.json", "A.geojson.gz", "A.heatmap.png",
        "B.export.json", "B.geojson.gz", "B.heatmap.png",
    ]  # fmt: skip
    features = list(read_geojson(exports / "A.geojson.gz"))
    assert sum(f.object_type == "tile" for f in features) == 24
    assert any("attention" in f.measurements for f in features)
    record = json.loads((exports / "A.export.json").read_text())
    assert record["files"] == {"geojson": "A.geojson.gz", "heatmap": "A.heatmap.png"}
    assert record["identity"]["config"]["run"] == "r1"
    assert set(record["identity"]["parts"]) == {"tiling", "attention/r1", "cells"}
    assert report.outcome("A").details["n_tiles"] == 24
    assert (project / "status" / "export" / "A.json").is_file()
    assert report.part == "exports"


def test_a_rerun_skips_current_slides_and_redoes_stale_ones(project):
    _export(project)
    assert [r.status for r in _export(project).results] == ["skipped", "skipped"]
    # A new version of B's run (same run name, same identity): only B is redone.
    scores = np.linspace(1, 0, 23, dtype=np.float32)
    write_attention(project / "stores" / "B.zarr", "r1", scores, model_id="m", info={})
    assert [r.status for r in _export(project).results] == ["skipped", "done"]
    # A lost file, or a lost record, redoes its slide.
    (project / "exports" / "A.heatmap.png").unlink()
    (project / "exports" / "B.export.json").unlink()
    assert [r.status for r in _export(project).results] == ["done", "done"]
    assert [r.status for r in _export(project, overwrite=True).results] == ["done", "done"]


def test_another_config_redoes_every_slide(project):
    _export(project)
    stage = ExportStage(ExportConfig(run="r1", what=("tiles",), keep_only=True))
    assert not stage.done(str(project / "stores" / "A.zarr"))
    report = _export(project, stage.config)
    assert [r.status for r in report.results] == ["done", "done"]
    kinds = {f.object_type for f in read_geojson(project / "exports" / "A.geojson.gz")}
    assert kinds == {"tile"}
    assert stage.done(str(project / "stores" / "A.zarr"))


def test_a_failed_export_leaves_no_record_and_fails_alone(project, monkeypatch):
    import slideflow_core.viewer.heatmap as heatmap

    def broken(store, out, **kwargs):
        if "B.zarr" in str(store):
            raise heatmap.HeatmapError("cannot draw", hint="fix it")
        return original(store, out, **kwargs)

    original = heatmap.write_heatmap
    monkeypatch.setattr(heatmap, "write_heatmap", broken)
    report = _export(project)
    assert [r.status for r in report.results] == ["done", "failed"]
    assert report.outcome("B").hint == "fix it"
    assert not (project / "exports" / "B.export.json").exists()
    assert not list((project / "exports").glob(".*partial*"))
    monkeypatch.setattr(heatmap, "write_heatmap", original)
    assert [r.status for r in _export(project).results] == ["skipped", "done"]


def test_a_store_without_the_run_fails_with_the_reason(tmp_path):
    make_store(tmp_path, "A")
    make_store(tmp_path, "B", run=None)
    report = _export(tmp_path)
    assert report.outcome("A").status == "done"
    assert report.outcome("B").status == "failed" and "attention/r1" in report.outcome("B").error


def test_no_run_means_no_heatmap_and_out_moves_the_files(tmp_path):
    make_store(tmp_path, "A")
    out = tmp_path / "elsewhere"
    report = _export(tmp_path, ExportConfig(gzip=False, out=str(out)))
    assert report.outcome("A").details["heatmap"] is None
    assert sorted(p.name for p in out.iterdir()) == ["A.export.json", "A.geojson"]


def test_the_stage_is_registered_and_builds_its_config_from_plain_data():
    stage = create_stage("export", {"what": "tiles", "run": "abmil", "precision": 3})
    assert isinstance(stage, ExportStage)
    assert stage.config.what == ("tiles",) and stage.config.precision == 3
    assert create_stage("export", {"what": ["all"]}).config.what == ("tissue", "tiles", "cells")
    assert (stage.name, stage.order, stage.executor) == ("export", 50, "tasks")
    with pytest.raises(StageConfigError, match="precision"):
        create_stage("export", {"precision": 9})
    with pytest.raises(StageConfigError, match="unknown settings"):
        create_stage("export", {"colour": "red"})


@pytest.mark.integration
def test_ray_tasks_export_the_same_files(project, ray_session):
    report = run_cohort(ExportStage(ExportConfig(run="r1")), project, progress=False)
    assert [r.status for r in report.results] == ["done", "done"]
    assert "Ray tasks" in report.info["executor"]
    assert (project / "exports" / "B.export.json").is_file()
