"""The pipeline config: YAML round trip, defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from cluster import PipelineConfig, PipelineConfigError, load_config
from slideflow_core.errors import RegistryError
from slideflow_core.stages import create_stage
from tiling import TilingConfig


def test_yaml_round_trip_keeps_every_field(tmp_path):
    config = PipelineConfig(
        run_dir="s3://bucket/project",
        stages=("embed", "tile"),
        settings={
            "tile": TilingConfig(mpp=0.25, tile_px=224, stain="macenko", stain_reference="ref.png"),
            "embed": {"model": "timm:vit_small_patch16_224", "num_actors": 2, "dtype": "float32"},
        },
        batch_slides=8,
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(config.to_yaml())
    loaded = PipelineConfig.from_yaml(path)
    assert loaded == config
    assert loaded.stages == ("tile", "embed")  # run order is fixed, whatever the YAML says
    assert loaded.remote
    assert load_config(str(path)) == config
    assert load_config(config.to_dict()) == config


def test_minimal_yaml_tiles_with_defaults(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run_dir: /data/project\ntiling: {mpp: 0.5, tile_px: 256}\n")
    config = PipelineConfig.from_yaml(path)
    assert config.stages == ("tile",)
    assert config.stage_config("tile") == TilingConfig(mpp=0.5, tile_px=256)  # old section name
    assert not config.remote
    assert config.with_run_dir("/elsewhere").run_dir == "/elsewhere"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run_dir: /x\nstages: [tile, segmentation]\n", "stages must be"),
        ("run_dir: /x\nstages: [tile, embed]\n", "the embed stage"),
        ("run_dir: /x\nbatch_slides: 0\n", "batch_slides"),
        ("run_dir: /x\ntiling: {mpp: 0.5, tile_size: 3}\n", "unknown settings"),
        ("run_dir: /x\ntile: {mpp: -1}\n", "resolution must be positive"),
        ("run_dir: /x\nembed: {model: uni, tiles: some}\n", "tiles"),
        ("run_dir: /x\nworkers: 3\n", "unknown keys"),
        ("run_dir: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PipelineConfigError, match=message):
        PipelineConfig.from_yaml(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "nope.yaml")


def test_stages_are_chosen_by_name_from_a_registry():
    assert create_stage("tile").part() == "tiling"
    with pytest.raises(RegistryError, match="did you mean"):
        create_stage("tiles")


def test_run_dir_can_come_from_the_command_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages: [tile]\ntile: {mpp: 0.5}\n")
    config = PipelineConfig.from_yaml(path)
    with pytest.raises(PipelineConfigError, match="no run directory"):
        config.require_run_dir()
    assert config.with_run_dir(tmp_path / "run").require_run_dir() == str(tmp_path / "run")


def test_stages_run_in_their_own_order_whatever_the_list_says():
    config = PipelineConfig(run_dir="/x", stages=("export", "tile"))
    assert config.stages == ("tile", "export")


def test_the_shipped_kuberay_pipeline_and_the_deploy_guide_load():
    import re
    from pathlib import Path

    import yaml

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    documents = yaml.safe_load_all((deploy / "kuberay" / "storage.yaml").read_text())
    [config_map] = [d for d in documents if d and d.get("kind") == "ConfigMap"]
    shipped = PipelineConfig.from_dict(yaml.safe_load(config_map["data"]["pipeline.yaml"]))
    assert shipped.stages == ("tile", "embed") and shipped.remote
    [guide] = re.findall(r"```yaml\n(.*?)```", (deploy / "README.md").read_text(), re.DOTALL)
    assert "predict" in PipelineConfig.from_dict(yaml.safe_load(guide)).stages
