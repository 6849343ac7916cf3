"""``sfc verify --repair`` finds the stage that wrote a part, and its config, from the
part's record alone, through the stage registry; what it cannot rebuild it says why."""

from __future__ import annotations

import gzip
from dataclasses import asdict

import pytest

from embedders.config import EmbedConfig
from embedders.dense.plan import SegmentConfig
from slideflow_core.geojson.stage import ExportConfig
from slideflow_core.repair import Redo, RepairPlan, config_record, run_repair, writer_of
from tiling import TilingConfig


def _factory():  # a model given as code: its config cannot be written down
    raise AssertionError("never built")


def test_each_stage_is_found_with_the_config_it_recorded():
    tiling = TilingConfig(mpp=1.0, tile_px=128, shard_tiles=8)
    name, data = writer_of("tiling", {"config": tiling.to_dict()})
    assert name == "tile" and TilingConfig.from_dict(data) == tiling

    embed = EmbedConfig(model="handcrafted", dtype="float32", batch_size=8)
    assert writer_of("features/handcrafted", {"config": config_record(embed)}) == (
        "embed",
        config_record(embed),
    )
    named = EmbedConfig(model="handcrafted", name="hc")
    assert writer_of("features/hc", {"config": config_record(named)})[0] == "embed"

    cells = asdict(SegmentConfig(tile_px=512))
    assert writer_of("cells/classical", {"config": cells}) == ("segment", cells)
    assert writer_of("cells", {"config": cells})[0] == "segment"  # the pointer part

    predicted = {"run_dir": "/runs/r", "folds": ["fold-0"], "prediction": {"p": 0.5}}
    assert writer_of("attention/pred", predicted) == (
        "predict",
        {"run": "/runs/r", "fold": "fold-0", "name": "pred"},
    )

    export = ExportConfig(run="r1", what=("tiles",))
    name, data = writer_of("exports", {"config": export.to_dict()})
    assert name == "export" and ExportConfig(**data) == export


@pytest.mark.parametrize(
    ("part", "record", "reason"),
    [
        ("features/old", {"identity": {}}, "holds no config"),
        ("features/f", {"config": config_record(EmbedConfig(model=_factory, name="f"))},
         "holds code"),
        ("features/other", {"config": config_record(EmbedConfig(model="handcrafted"))},
         "no installed stage"),
        ("attention/train", {"run_dir": "/runs/train", "folds": ["fold-0"]},
         "out-of-fold attention of training run /runs/train"),
    ],
)  # fmt: skip
def test_what_cannot_be_rebuilt_is_refused_with_the_reason(part, record, reason):
    with pytest.raises(ValueError, match=reason):
        writer_of(part, record)


def test_a_stage_that_cannot_run_fails_its_slides_instead_of_the_repair(tmp_path):
    (tmp_path / "stores").mkdir()
    redo = Redo("predict", {"run": str(tmp_path / "gone"), "name": "pred"}, (("a", None, None),))
    [report] = run_repair(tmp_path, RepairPlan((redo,), ()), [])
    [outcome] = report.results
    assert outcome.status == "failed" and "gone" in outcome.error


@pytest.mark.integration
def test_a_repair_runs_its_stages_on_ray_tasks_when_asked(tmp_path, ray_session):
    from overlay_stores import make_store

    from slideflow_core.geojson.stage import ExportStage
    from slideflow_core.repair import repair_project
    from slideflow_core.stages import run_cohort

    make_store(tmp_path, "A")
    stage = ExportStage(ExportConfig(run="r1"))
    assert run_cohort(stage, tmp_path, executor="local", progress=False).ok
    geojson = tmp_path / "exports" / "A.geojson.gz"
    clean = geojson.read_bytes()
    data = bytearray(clean)
    data[len(data) // 2] ^= 0x01
    geojson.write_bytes(bytes(data))

    result = repair_project(tmp_path, deep=True, executor="tasks")

    assert result.ok
    [report] = result.reports
    assert report.stage == "export" and [r.status for r in report.results] == ["done"]
    assert "Ray tasks" in report.info["executor"]
    assert gzip.decompress(geojson.read_bytes()) == gzip.decompress(clean)  # mtime aside
