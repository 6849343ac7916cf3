"""An experiment over slide stores end to end: run folder, attention, reload, predict, tamper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from mil_fixtures import one_torch_thread, synthetic_project  # noqa: F401 (autouse)

import mil
from mil.errors import CheckpointError, MILError
from slideflow_core.cohort import Cohort
from slideflow_core.features import read_attention


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    frame, truth = synthetic_project(root, 24, shift=3.0)
    cohort = Cohort.from_manifest(frame, root=root)
    exp = mil.Experiment(
        cohort,
        project=root,
        features="synth",
        label="tumour",
        model="gated_abmil",
        model_kwargs={"hidden_dim": 16},
        splits=mil.KFold(k=3),
        train=mil.TrainConfig(epochs=15, lr=3e-3, batch_size=2),
        name="gated-test",
        heatmaps=1,
    )
    return exp, exp.run(), cohort, truth


def test_run_writes_metrics_predictions_config_and_pictures(finished):
    exp, results, cohort, _ = finished
    run = results.run_dir
    assert run == exp.layout.root / "runs" / "gated-test"
    assert set(results.metrics["fold"]) == {"fold-0", "fold-1", "fold-2", "pooled"}
    assert results.pooled["auroc"] > 0.85
    assert (
        results.pooled["auroc_ci_low"] <= results.pooled["auroc"] <= results.pooled["auroc_ci_high"]
    )
    predictions = results.predictions
    assert sorted(predictions["slide_id"]) == sorted(cohort.slide_ids)  # each slide tested once
    assert {"slide_id", "patient_id", "fold", "label", "prob_0", "prob_1"} <= set(predictions)
    np.testing.assert_allclose(predictions[["prob_0", "prob_1"]].sum(axis=1), 1, atol=1e-5)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["experiment"]["model"] == "gated_abmil" and config["task"]["classes"] == [0, 1]
    assert config["experiment"]["data"]["features"] == "synth"
    assert set(config["checkpoints"]) == {"fold-0", "fold-1", "fold-2"}
    assert json.loads((run / "splits.json").read_text())["method"] == "kfold"
    for name in ("roc.png", "metrics.png", "report.html", "fold-0/model.safetensors"):
        assert (run / name).stat().st_size > 0, name
    assert len(list((run / "heatmaps").glob("*.png"))) == 1
    assert "fold-0" in (run / "report.html").read_text()


def test_attention_is_written_back_to_every_tested_store_and_finds_witnesses(finished):
    exp, _results, cohort, truth = finished
    hits = []
    for i, slide_id in enumerate(cohort.slide_ids):
        attention = read_attention(exp.layout.store(slide_id), "gated-test")
        assert attention.scores.shape == (len(truth[i]),)
        assert attention.info["head"] == "gated_abmil"
        if truth[i].any():
            hits.append(np.argmax(attention.scores) in np.flatnonzero(truth[i]))
    assert np.mean(hits) > 0.8, "top attention should land on a witness tile"


def test_reloaded_run_predicts_exactly_what_the_run_recorded(finished):
    _exp, results, cohort, _ = finished
    loaded = mil.Experiment.load(results.run_dir)
    assert loaded.results is not None and len(loaded.results.predictions) == len(cohort)
    for fold in ("fold-0", "fold-2"):
        recorded = results.predictions[results.predictions["fold"] == fold]
        again = loaded.predict(cohort.subset(recorded["slide_id"]), fold=fold)
        again = again.set_index("slide_id").loc[recorded["slide_id"]]
        np.testing.assert_allclose(again["prob_1"], recorded["prob_1"], rtol=0, atol=1e-6)
        assert list(again["label"]) == list(recorded["label"])
    ensemble = loaded.predict(cohort)  # mean over the folds' models
    assert len(ensemble) == len(cohort) and ensemble["prob_1"].between(0, 1).all()


def test_corrupt_or_tampered_checkpoint_is_refused_clearly(finished, tmp_path):
    _, results, _cohort, _ = finished
    import shutil

    copy = tmp_path / "project" / "runs" / "gated-test"
    shutil.copytree(results.run_dir, copy)
    checkpoint = copy / "fold-1" / "model.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit pattern in the weights: still parses, wrong checksum
    checkpoint.write_bytes(bytes(data))
    loaded = mil.Experiment.load(copy)
    with pytest.raises(CheckpointError, match="checksum") as info:
        loaded.model("fold-1")
    assert "fold-1/model.safetensors" in str(info.value) and info.value.hint
    checkpoint.write_bytes(bytes(data[:100]))  # truncated: not even safetensors
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        mil.checkpoint.load_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="does not exist"):
        mil.checkpoint.load_checkpoint(copy / "fold-9" / "model.safetensors")


def test_missing_label_column_or_features_are_explained(finished):
    exp, _, cohort, _ = finished
    with pytest.raises(MILError, match="no column 'grade'"):
        mil.Experiment(cohort, project=exp.layout.root, features="synth", label="grade").run()
    with pytest.raises(MILError, match="have no features/uni") as info:
        mil.Experiment(cohort, project=exp.layout.root, features="uni", label="tumour").run()
    assert "embed" in info.value.hint


def test_classical_bags_run_through_the_same_experiment(tmp_path, shared_data):
    table = mil.read_mil_csv(shared_data / "mil" / "musk1.csv.gz")
    results = mil.Experiment(
        table,
        project=tmp_path,
        model="mean",
        model_kwargs={"hidden_dim": 32},
        splits=mil.KFold(k=3),
        train=mil.TrainConfig(epochs=10, lr=1e-3, batch_size=4, standardize=True, patience=None),
        name="musk1",
    ).run()
    assert results.pooled["accuracy"] > 0.7
    record = yaml.safe_load((results.run_dir / "config.yaml").read_text())
    assert record["experiment"]["data"]["bags"].endswith("musk1.csv.gz")
    assert record["bags"] == {"kind": "bags", "n_bags": len(table), "feature_dim": table.dim}
