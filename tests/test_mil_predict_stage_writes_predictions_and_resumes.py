"""The ``predict`` stage on a real tiny project: predictions table, attention parts, resume.

Synthetic tumour slides are tiled and embedded by the real stages, a run is
trained on them, and the stage applies it through the core runner.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from mil_fixtures import one_torch_thread, tumour_project  # noqa: F401 (autouse)

import mil
from mil.errors import MILError
from mil.stage import PredictConfig, PredictStage, predictions_path
from slideflow_core.cohort import Cohort
from slideflow_core.features import read_attention, read_features, write_features
from slideflow_core.stages import create_stage, list_stages
from slideflow_core.store import commit_store, read_store_attrs, start_store

COLUMNS = ["prob_normal", "prob_tumour"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    project, manifest = tumour_project(tmp_path_factory.mktemp("predict"), 8)
    cohort = Cohort.from_manifest(manifest)
    mil.Experiment(
        cohort,
        project=project,
        features="handcrafted",
        label="label",
        model="abmil",
        model_kwargs={"hidden_dim": 16},
        splits=mil.KFold(k=2),
        train=mil.TrainConfig(epochs=5, patience=None, batch_size=2, standardize=True),
        name="tumour",
        heatmaps=0,
    ).run()
    return project, manifest, cohort, project / "runs" / "tumour"


def predict(trained, **options):
    project, manifest, _, run = trained
    options = {"executor": "local", "progress": False, **options}
    return mil.predict_cohort(run, project, manifest, **options)


def table(trained, name: str) -> pd.DataFrame:
    return pd.read_csv(predictions_path(trained[0], name), dtype={"slide_id": str})


def test_stage_is_registered_with_its_order_and_config():
    row = next(r for r in list_stages() if r["name"] == "predict")
    assert row["available"] and row["order"] == 40 and row["executor"] == "tasks"
    stage = create_stage("predict", {"run": "runs/x", "fold": 1, "name": "x-fold1"})
    assert isinstance(stage, PredictStage) and stage.config == PredictConfig(
        run="runs/x", fold=1, name="x-fold1"
    )


def test_predictions_table_and_attention_parts_match_experiment_predict(trained):
    project, _, cohort, run = trained
    report = predict(trained, name="ensemble")
    assert report.ok and [r.status for r in report.results] == ["done"] * len(cohort)
    assert report.part == "attention/ensemble"
    frame = table(trained, "ensemble")
    assert list(frame.columns) == ["slide_id", "label", *COLUMNS]
    assert list(frame["slide_id"]) == list(cohort.slide_ids)  # one row per slide, in order
    assert list(frame["label"]) == [r.labels["label"] for r in cohort]
    np.testing.assert_allclose(frame[COLUMNS].sum(axis=1), 1, atol=1e-6)
    expected = mil.Experiment.load(run).predict(cohort)  # the same Predictor, another path
    np.testing.assert_allclose(frame[COLUMNS], expected[COLUMNS], rtol=0, atol=1e-6)

    checksums = mil.Experiment.load(run).checksums()
    stage = PredictStage(PredictConfig(run=str(run), name="ensemble"))
    for outcome, row in zip(report.results, frame.itertuples(index=False), strict=True):
        store = str(project / "stores" / f"{outcome.slide_id}.zarr")
        attention = read_attention(store, "ensemble")
        assert outcome.n_tiles == len(attention.scores) == len(read_features(store, "handcrafted"))
        assert attention.scores.ndim == 1 and np.isfinite(attention.scores).all()
        assert attention.info["prediction"] == pytest.approx(
            dict(zip(COLUMNS, row[2:], strict=True))
        )
        identity = attention.info["identity"]
        assert identity["run"] == "tumour" and identity["checkpoints"] == checksums
        assert identity["features"]["part"] == "features/handcrafted"
        assert outcome.details == {"label": row.label, **attention.info["prediction"]}
        assert stage.done(store)
        status = json.loads(
            (project / "status" / "predict" / f"{outcome.slide_id}.json").read_text()
        )
        assert status["status"] == "done" and status["details"] == outcome.details


def test_rerun_skips_every_slide_and_rebuilds_the_table_from_the_stores(trained):
    project, _, cohort, _ = trained
    first = predict(trained, name="resumed")
    path = predictions_path(project, "resumed")
    written = path.read_text()
    path.unlink()
    again = predict(trained, name="resumed")
    assert [r.status for r in again.results] == ["skipped"] * len(cohort)
    assert path.read_text() == written  # every row read back from the attention parts
    assert [r.details for r in again.results] == [r.details for r in first.results]

    slide = cohort.slide_ids[2]  # re-embedded: its prediction is stale, refused until overwrite
    store = project / "stores" / f"{slide}.zarr"
    bag = read_features(store, "handcrafted")
    info = {**bag.info, "identity": {**bag.info["identity"], "weights": "retrained"}}
    with write_features(
        store, "handcrafted", tile_index=bag.tile_index, coords=bag.coords,
        dim=bag.features.shape[1], info=info, dtype="float32",
    ) as writer:  # fmt: skip
        writer.put(0, bag.features)
    third = predict(trained, name="resumed")
    statuses = {r.slide_id: r.status for r in third.results}
    assert statuses.pop(slide) == "failed"  # made from other features: refused, not redone
    assert set(statuses.values()) == {"skipped"}
    assert "--overwrite" in third.outcome(slide).hint
    assert len(table(trained, "resumed")) == len(cohort) - 1  # a failed slide has no row
    fourth = predict(trained, name="resumed", overwrite=True)
    assert [r.status for r in fourth.results] == ["done"] * len(cohort)
    assert len(table(trained, "resumed")) == len(cohort)


def test_slides_predicted_in_waves_end_in_one_table(trained):
    project, _, cohort, run = trained
    ids = list(cohort.slide_ids)
    for wave in (ids[:3], ids[3:]):  # as the cluster pipeline runs a cohort
        report = mil.predict_cohort(
            run, project, cohort.subset(wave), name="waves", executor="local", progress=False
        )
        assert [r.slide_id for r in report.results] == wave
    frame = table(trained, "waves")
    assert list(frame["slide_id"]) == ids
    whole = predict(trained, name="whole")
    assert [r.status for r in whole.results] == ["done"] * len(ids)
    pd.testing.assert_frame_equal(frame, table(trained, "whole"))


def test_training_attention_is_not_replaced_without_overwrite(trained):
    project, _, cohort, _ = trained
    store = project / "stores" / f"{cohort.slide_ids[0]}.zarr"
    out_of_fold = read_attention(store, "tumour").info["folds"]
    assert len(out_of_fold) == 1  # written by training: the fold that tested the slide
    refused = predict(trained)  # the default part is attention/<run>
    assert [r.status for r in refused.results] == ["failed"] * len(cohort)
    assert "made differently" in refused.results[0].error
    assert read_attention(store, "tumour").info["folds"] == out_of_fold
    replaced = predict(trained, overwrite=True)
    assert replaced.ok and read_attention(store, "tumour").info["folds"] == ["fold-0", "fold-1"]
    assert {r.status for r in predict(trained).results} == {"skipped"}


def test_one_fold_predicts_with_its_own_model_only(trained):
    project, _, cohort, run = trained
    report = predict(trained, fold="1", name="fold-1-only")
    assert report.ok
    expected = mil.Experiment.load(run).predict(cohort, fold="fold-1")
    np.testing.assert_allclose(table(trained, "fold-1-only")[COLUMNS], expected[COLUMNS], atol=1e-6)
    store = project / "stores" / f"{cohort.slide_ids[0]}.zarr"
    assert list(read_attention(store, "fold-1-only").info["identity"]["checkpoints"]) == ["fold-1"]


def test_a_slide_without_features_fails_alone_and_bad_runs_fail_before_anything(trained, tmp_path):
    project, _, cohort, run = trained
    lone = project / "stores" / "no-features.zarr"
    commit_store(start_store(lone, {"slide_id": "no-features"}), lone)
    try:
        report = mil.predict_cohort(
            run, project, name="with-lone", executor="local", progress=False
        )
    finally:
        shutil.rmtree(lone)
    failed = report.outcome("no-features")
    assert failed.status == "failed" and "no complete features/handcrafted" in failed.error
    assert "sfc embed" in failed.hint
    assert sorted(report.succeeded) == sorted(cohort.slide_ids)
    assert "no-features" not in set(table(trained, "with-lone")["slide_id"])

    elsewhere = tmp_path / "not-a-project"
    with pytest.raises(MILError, match="is not a MIL run") as info:
        mil.predict_cohort(tmp_path / "runs" / "missing", elsewhere, executor="local")
    assert info.value.hint and not elsewhere.exists()  # failed before any folder was made
    with pytest.raises(MILError, match="has no stores folder"):
        mil.predict_cohort(run, elsewhere, executor="local")
    with pytest.raises(MILError, match="has no fold 'fold-9'"):
        mil.predict_cohort(run, project, fold="fold-9", executor="local")
    assert read_store_attrs(project / "stores" / f"{cohort.slide_ids[0]}.zarr")["parts"]


def test_a_slide_with_no_tile_fails_instead_of_getting_the_heads_bias(trained):
    """A slide where no tile passed QC has an empty bag: no prediction is made up for it."""
    project, _, cohort, run = trained
    empty = project / "stores" / "no-tiles.zarr"
    commit_store(start_store(empty, {"slide_id": "no-tiles"}), empty)
    bag = read_features(project / "stores" / f"{cohort.slide_ids[0]}.zarr", "handcrafted")
    dim = bag.features.shape[1]
    with write_features(
        empty, "handcrafted", tile_index=np.zeros(0, np.int64), coords=np.zeros((0, 2), np.int64),
        dim=dim, info={"identity": {"empty": True}},
    ):  # fmt: skip
        pass
    try:
        report = mil.predict_cohort(run, project, name="with-empty", executor="local",
                                    progress=False)  # fmt: skip
    finally:
        shutil.rmtree(empty)
    failed = report.outcome("no-tiles")
    assert failed.status == "failed" and "no tile to predict from" in failed.error
    assert "sfc tiles info" in failed.hint
    assert "no-tiles" not in set(table(trained, "with-empty")["slide_id"])


@pytest.mark.integration
def test_ray_tasks_predict_the_same_as_this_process(trained, ray_session):
    report = predict(trained, name="on-ray", executor="tasks")
    assert report.ok and report.info["executor"].startswith("Ray tasks")
    assert report.info["folds"] == ["fold-0", "fold-1"]
    predict(trained, name="here")
    np.testing.assert_allclose(
        table(trained, "on-ray")[COLUMNS], table(trained, "here")[COLUMNS], rtol=0, atol=1e-6
    )
