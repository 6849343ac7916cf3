"""A MIL run config (YAML) becomes frozen configs and back; every mistake names file and key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

import mil
from mil.config import DataConfig, MILRunConfig
from mil.errors import MILError

HEADS = ", ".join(row["name"] for row in mil.list_heads())  # the registry's, not a copy
CONFIG = {
    "name": "tumour-abmil",
    "data": {
        "manifest": "manifest.csv",
        "project": "project",
        "features": "handcrafted",
        "label": "label",
    },
    "task": "classification",
    "task_options": {"classes": ["normal", "tumour"]},
    "model": "abmil",
    "model_kwargs": {"hidden_dim": 16},
    "splits": {"method": "kfold", "k": 3, "val_fraction": 0.2},
    "train": {"epochs": 5, "lr": 0.001, "standardize": True},
    "heatmaps": 1,
}


def write(folder: Path, values: dict | str, name: str = "run.yaml") -> Path:
    path = folder / name
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return path


def test_file_becomes_frozen_configs_with_paths_from_its_folder(tmp_path):
    path = write(tmp_path, CONFIG)
    config = MILRunConfig.load(path)
    assert config.data == DataConfig(
        project=str(tmp_path / "project"),
        manifest=str(tmp_path / "manifest.csv"),
        features="handcrafted",
        label="label",
    )
    experiment = config.experiment
    assert experiment.name == "tumour-abmil" and experiment.model == "abmil"
    assert experiment.train == mil.TrainConfig(epochs=5, lr=0.001, standardize=True)
    assert experiment.splits == {"method": "kfold", "k": 3, "val_fraction": 0.2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.name = "other"  # type: ignore[misc]


def test_to_dict_gives_the_file_layout_back_and_reads_to_the_same_config(tmp_path):
    config = MILRunConfig.load(write(tmp_path, CONFIG))
    values = config.to_dict()
    assert list(values)[:2] == ["name", "data"] and set(values) == set(CONFIG)
    assert values["train"]["epochs"] == 5 and values["train"]["patience"] == 10  # defaults filled
    again = MILRunConfig.load(write(tmp_path / "..", values, "again.yaml"))
    assert again == config


def test_a_config_without_name_gets_a_dated_default(tmp_path):
    values = {k: v for k, v in CONFIG.items() if k != "name"}
    name = MILRunConfig.from_dict(values, base=tmp_path).name
    assert re.fullmatch(r"abmil-label-\d{8}-\d{6}", name)


def test_bags_instead_of_a_manifest(tmp_path):
    config = MILRunConfig.from_dict({"data": {"bags": "musk1.csv", "project": "."}}, base=tmp_path)
    assert config.data.bags == str(tmp_path / "musk1.csv") and not config.data.slides
    assert config.experiment.model == "abmil"  # every experiment default


def with_(**changes) -> dict:
    values = yaml.safe_load(yaml.safe_dump(CONFIG))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            values[section][field] = value
        elif value is None:
            del values[section]
        else:
            values[section] = value
    return values


@pytest.mark.parametrize(
    ("values", "message", "hint"),
    [
        (with_(modle="abmil"), "unknown key modle", "known keys: data, heatmaps, model"),
        (with_(train__lrr=0.1), "unknown key train.lrr", "known keys of train: accumulate"),
        (with_(train__lr=-1), r"train: invalid TrainConfig: lr=-1", "fix train"),
        (with_(model="abmill"), f"model: unknown MIL head 'abmill'; available: {HEADS}",
         "did you mean abmil"),
        (with_(task="survival"), "task: unknown MIL task 'survival'", "survival_cox"),
        (with_(splits={"method": "kfolds"}), "splits.method is 'kfolds'",
         "kfold, monte_carlo, column"),
        (with_(splits={"method": "kfold", "kk": 2}), "unknown key splits.kk", "val_fraction"),
        (with_(splits={"method": "kfold", "k": 1}), "splits: k must be at least 2", "fix splits"),
        (with_(data=None), "no data section", "manifest"),
        (with_(data__project=None), "data.project is missing", "project folder"),
        (with_(data__bags="x.csv"), "manifest (slides) or bags (a MIL table), not both", None),
        (with_(data__label=None), "slides need features", None),
        (with_(task="survival_cox"), "needs event=", "event column"),
        (with_(name="../escape"), "name: '../escape' is not a valid store part name", "letters"),
        (with_(heatmaps=-1), "heatmaps must be an integer >= 0", None),
        (with_(model_kwargs=[16]), "model_kwargs must be a mapping", "key: value"),
        ({"data": {"manifest": "m.csv"}}, "data.project is missing", "project"),
        (["not", "a", "mapping"], "the file must be a mapping", None),
    ],
)  # fmt: skip
def test_every_mistake_names_the_file_and_the_key(tmp_path, values, message, hint):
    path = write(tmp_path, values)
    with pytest.raises(MILError) as info:
        MILRunConfig.load(path)
    text = info.value.message
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert info.value.hint, "every mistake has a hint"
    if hint is not None:
        assert hint in info.value.hint, info.value.hint


def test_missing_file_and_broken_yaml_are_explained(tmp_path):
    with pytest.raises(MILError, match="no run config file") as info:
        MILRunConfig.load(tmp_path / "missing.yaml")
    assert info.value.hint
    broken = write(tmp_path, "name: x\ndata: {manifest: m.csv\ntrain: [", "broken.yaml")
    with pytest.raises(MILError, match=r"broken\.yaml is not valid YAML: .*line") as info:
        MILRunConfig.load(broken)
    assert "indentation" in info.value.hint


def test_experiment_from_config_names_a_missing_manifest(tmp_path):
    path = write(tmp_path, CONFIG)
    with pytest.raises(MILError) as info:
        mil.Experiment.from_config(path)
    assert f"{path}: data.manifest: no file {tmp_path / 'manifest.csv'}" == info.value.message
    assert "relative to the config file's folder" in info.value.hint
    with pytest.raises(MILError, match=r"run name 'a/b': 'a/b' is not a valid"):
        mil.Experiment.from_config(path, name="a/b")
