"""A project moved (or a run folder renamed) after training loads and predicts from there."""

from __future__ import annotations

import shutil

import numpy as np
from mil_fixtures import one_torch_thread, synthetic_project  # noqa: F401 (autouse)

import mil
from mil.stage import PredictConfig, PredictStage
from slideflow_core.cohort import Cohort
from slideflow_core.features import read_attention


def test_moved_project_reloads_and_predicts_from_the_new_place(tmp_path):
    old = tmp_path / "old" / "project"
    frame, _ = synthetic_project(old, 12, shift=3.0)
    experiment = mil.Experiment(
        Cohort.from_manifest(frame, root=old),
        project=old,
        features="synth",
        label="tumour",
        model="abmil",
        model_kwargs={"hidden_dim": 8},
        splits=mil.KFold(k=2),
        train=mil.TrainConfig(epochs=3, patience=None, batch_size=2),
        name="moved",
        heatmaps=1,
    )
    experiment.run()
    before = mil.Experiment.load(old / "runs" / "moved").predict(Cohort.from_manifest(frame))

    new = tmp_path / "elsewhere" / "renamed-project"
    new.parent.mkdir()
    shutil.move(old, new)
    assert not old.exists()
    loaded = mil.Experiment.load(new / "runs" / "moved")
    assert loaded.layout.root == new and loaded.run_dir == new / "runs" / "moved"
    assert loaded.run_config.data.project == str(new)
    files = loaded.results.files
    assert {"report", "metrics_png", "roc"} <= set(files)
    for path in files.values():
        assert path.startswith(str(new)) and (new / path).is_file(), path

    cohort = Cohort.from_manifest(frame.assign(path="unused.svs"), root=new)
    after = loaded.predict(cohort, attention=True)
    np.testing.assert_allclose(after["prob_1"], before["prob_1"], rtol=0, atol=1e-6)
    attention = read_attention(new / "stores" / "slide-000.zarr", "moved")
    assert attention.info["run_dir"] == str(new / "runs" / "moved")
    assert attention.info["prediction"]["prob_1"] == after.loc[0, "prob_1"]
    stage = PredictStage(PredictConfig(run=str(new / "runs" / "moved")))
    assert stage.done(str(new / "stores" / "slide-000.zarr"))  # the stage would skip it

    renamed = new / "runs" / "kept-under-another-name"
    (new / "runs" / "moved").rename(renamed)
    again = mil.Experiment.load(renamed)
    assert again.run_dir == renamed and again.name == "moved"  # the part keeps the run's name
    np.testing.assert_allclose(again.predict(cohort)["prob_1"], before["prob_1"], atol=1e-6)
