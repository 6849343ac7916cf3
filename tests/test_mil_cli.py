"""``sfc mil train|predict|report`` as a user runs them: fresh processes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from mil_fixtures import tumour_project

from slideflow_core.cli import main

SFC = [sys.executable, "-c", "import sys; from slideflow_core.cli import main; sys.exit(main())"]


def sfc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SFC, "mil", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def failed(result: subprocess.CompletedProcess, message: str, hint: str) -> None:
    """Exit 1 with ``error: <message>`` and ``hint: <hint>``, no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert lines[-1].startswith("hint: ") and hint in lines[-1], result.stderr


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """A tiny embedded project and a run config beside it (relative paths)."""
    root = tmp_path_factory.mktemp("cli")
    project, manifest = tumour_project(root, 6, seed=5)
    assert project == root / "project"
    values = {
        "name": "cli-run",
        "data": {
            "manifest": str(manifest.relative_to(root)),
            "project": "project",
            "features": "handcrafted",
            "label": "label",
        },
        "model": "abmil",
        "model_kwargs": {"hidden_dim": 8},
        "splits": {"method": "kfold", "k": 2},
        "train": {"epochs": 3, "patience": None, "batch_size": 2},
        "heatmaps": 1,
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    """``sfc mil ARGS`` through the same ``main`` in this process (torch already loaded)."""
    code = main(["mil", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_train_refuses_an_existing_run_then_overwrites_and_report_shows_it(config, capsys):
    trained = sfc("train", config.name, cwd=config.parent)  # the path relative to the cwd
    assert trained.returncode == 0, trained.stderr
    run = config.parent / "project" / "runs" / "cli-run"
    assert f"report: {run / 'report.html'}" in trained.stdout
    assert "pooled auroc: " in trained.stdout and "[95% CI " in trained.stdout

    failed(sfc("train", config), f"run 'cli-run' already exists at {run}", "--overwrite")
    assert in_process(capsys, "train", config, "--overwrite").returncode == 0
    renamed = in_process(capsys, "train", config, "--name", "cli-run-2")
    assert renamed.returncode == 0 and (run.parent / "cli-run-2" / "config.yaml").is_file()

    report = sfc("report", run)
    assert report.returncode == 0, report.stderr
    out = report.stdout
    assert "fold-0" in out and "fold-1" in out and "pooled" in out
    assert f"report: {run / 'report.html'}" in out and f"roc: {run / 'roc.png'}" in out
    assert "heatmap:" in out and "[95% CI " in out
    failed(in_process(capsys, "report", run.parent / "nope"), "is not a MIL run", "sfc mil train")


def test_config_mistakes_are_one_line_errors_with_a_hint(config, tmp_path, capsys):
    failed(sfc("train", tmp_path / "missing.yaml"), "no run config file", "YAML")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: {manifest: m.csv\n")
    failed(in_process(capsys, "train", broken), f"{broken} is not valid YAML", "indentation")
    values = yaml.safe_load(config.read_text())
    values["data"]["manifest"] = str(config.parent / values["data"]["manifest"])
    values["data"]["project"] = str(config.parent / "project")
    unknown = tmp_path / "head.yaml"
    unknown.write_text(yaml.safe_dump({**values, "model": "transmill"}))
    failed(
        in_process(capsys, "train", unknown),
        "model: unknown MIL head 'transmill'",
        "did you mean transmil",
    )
    missing = tmp_path / "manifest.yaml"
    missing.write_text(yaml.safe_dump({**values, "data": {**values["data"], "manifest": "x.csv"}}))
    failed(in_process(capsys, "train", missing), "data.manifest: no file", "relative to the config")


@pytest.mark.integration
def test_predict_writes_the_table_and_resumes(config, capsys):
    run = config.parent / "project" / "runs" / "cli-run"
    if not (run / "config.yaml").is_file():
        assert in_process(capsys, "train", config).returncode == 0
    project = config.parent / "project"
    manifest = config.parent / yaml.safe_load(config.read_text())["data"]["manifest"]
    args = ("predict", run, project, "--manifest", manifest, "--name", "cli", "--num-cpus", "1")
    first = sfc(*args, "--no-progress")
    assert first.returncode == 0, first.stderr
    table = project / "predictions" / "cli.csv"
    assert f"predictions: {table}" in first.stdout
    frame = pd.read_csv(table)
    assert len(frame) == 6 and {"slide_id", "label", "prob_normal", "prob_tumour"} <= set(frame)
    second = sfc(*args, "--no-progress")
    assert second.returncode == 0 and "6 skipped" in second.stdout
    assert pd.read_csv(table).equals(frame)
    missing = in_process(capsys, "predict", run.parent / "missing", project)
    failed(missing, "is not a MIL run", "sfc mil train")
    bad_fold = in_process(capsys, "predict", run, project, "--fold", "7")
    failed(bad_fold, "has no fold 7", "fold-0, fold-1")
