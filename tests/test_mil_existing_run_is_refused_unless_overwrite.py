"""A run name that exists is refused (nothing trained, nothing touched) unless overwrite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from mil_fixtures import one_torch_thread, witness_bags  # noqa: F401 (autouse)

import mil
from mil.config import MILRunConfig
from mil.errors import MILError


@pytest.fixture
def config_file(tmp_path):
    """A run config over a classical MIL table (bag_id,label,f0,…) written next to it."""
    bags, labels, _ = witness_bags(16, dim=8, instances=(5, 10), shift=3.0)
    rows = [
        {"bag_id": f"bag-{i}", "label": int(label), **{f"f{j}": v for j, v in enumerate(row)}}
        for i, (bag, label) in enumerate(zip(bags, labels, strict=True))
        for row in bag
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "bags.csv", index=False)
    config = {
        "name": "witness",
        "data": {"bags": "bags.csv", "project": "project"},
        "model": "mean",
        "model_kwargs": {"hidden_dim": 8},
        "splits": {"method": "kfold", "k": 2},
        "train": {"epochs": 2, "patience": None, "batch_size": 4},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_from_config_records_the_resolved_config_once(config_file):
    results = mil.Experiment.from_config(config_file).run()
    run = config_file.parent / "project" / "runs" / "witness"
    assert results.run_dir == run
    assert sorted(p.name for p in run.glob("*.yaml")) == ["config.yaml"]  # one record
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert MILRunConfig.from_dict(record["experiment"]) == MILRunConfig.load(config_file)
    assert record["experiment"]["data"]["bags"] == str(config_file.parent / "bags.csv")
    assert set(record["checkpoints"]) == {"fold-0", "fold-1"}
    assert mil.Experiment.load(run).run_config == MILRunConfig.load(config_file)


def test_existing_run_is_refused_then_replaced_with_overwrite(config_file):
    first = mil.Experiment.from_config(config_file).run()
    run = first.run_dir
    stale = run / "fold-7"  # as if left by an earlier run with more folds
    stale.mkdir()
    before = (run / "config.yaml").read_bytes()
    again = mil.Experiment.from_config(config_file)
    with pytest.raises(MILError, match=r"run 'witness' already exists at .*runs/witness") as info:
        again.run()
    assert "--overwrite" in info.value.hint and "--name" in info.value.hint
    assert (run / "config.yaml").read_bytes() == before and stale.is_dir()  # untouched

    replaced = again.run(overwrite=True)
    assert not stale.exists(), "overwrite starts the run folder afresh"
    assert (run / "config.yaml").read_bytes() != before  # a new record (times, checksums)
    np.testing.assert_allclose(
        replaced.metrics["accuracy"], first.metrics["accuracy"], atol=1e-9
    )  # same config and seeds: the same run again

    mil.Experiment.from_config(config_file, overwrite=True).run()  # the constructor flag
    other = mil.Experiment.from_config(config_file, name="witness-2").run()
    assert other.run_dir == run.parent / "witness-2"


def test_python_api_refuses_the_same_way(tmp_path):
    table = mil.BagTable.from_arrays(*witness_bags(8, dim=4, instances=(5, 8))[:2])
    options = {
        "project": tmp_path,
        "model": "mean",
        "splits": mil.KFold(k=2),
        "train": mil.TrainConfig(epochs=1),
        "name": "api",
    }
    mil.Experiment(table, **options).run()
    with pytest.raises(MILError, match="already exists"):
        mil.Experiment(table, **options).run()
    mil.Experiment(table, **options, overwrite=True).run()


def test_a_run_on_ready_made_folds_reloads_and_cannot_be_remade_from_its_config(
    config_file, tmp_path
):
    table = mil.read_mil_csv(config_file.parent / "bags.csv")
    ids = table.ids
    folds = (
        mil.Fold(name="a", train=ids[:8], val=(), test=ids[8:]),
        mil.Fold(name="b", train=ids[8:], val=(), test=ids[:8]),
    )
    splits = mil.Splits(method="hand-made", params={}, folds=folds)
    results = mil.Experiment(
        table, project=tmp_path, model="mean", splits=splits, train=mil.TrainConfig(epochs=1),
        name="given",
    ).run()  # fmt: skip
    loaded = mil.Experiment.load(results.run_dir)
    assert loaded.config.splits == {"method": "given"} and loaded.splits == splits
    record = yaml.safe_load((results.run_dir / "config.yaml").read_text())["experiment"]
    again = mil.Experiment.from_config({**record, "name": "given-again"})
    with pytest.raises(MILError, match="ready-made folds") as info:
        again.run()
    assert "Splits.load" in info.value.hint
