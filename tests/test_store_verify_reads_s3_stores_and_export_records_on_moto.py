"""``verify`` and ``sfc verify`` check stores on S3 (a local moto server) without downloading
them, and the export stage (and verify) read the export records on S3: a current export is
known as such without a local copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from overlay_stores import make_store

from slideflow_core.geojson.stage import ExportConfig, ExportStage
from slideflow_core.repair import verify_project
from slideflow_core.stages import run_cohort
from slideflow_core.verify import verify

pytestmark = pytest.mark.fault

SCORES = "attention/r1/scores/c/0"


@pytest.fixture
def uploaded(s3, tmp_path):
    """A project with one store and its export, uploaded to S3 (a bucket of its own, as
    moto keeps buckets between servers); the local copy deleted.

    Returns the filesystem, the project's URL, its store's URL and its bucket path.
    """
    bucket = f"results-{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    make_store(project, "A")
    report = run_cohort(
        ExportStage(ExportConfig(run="r1")), project, executor="local", progress=False
    )
    assert report.ok
    s3.mkdir(bucket)
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        key = path.relative_to(project).as_posix()
        if key.startswith(("stores/", "exports/")) and not path.name.startswith("."):
            s3.put_file(str(path), f"{bucket}/project/{key}")
    shutil.rmtree(project)
    url = f"s3://{bucket}/project"
    return s3, url, f"{url}/stores/A.zarr", f"{bucket}/project"


def _sfc_verify(*argv: str) -> subprocess.CompletedProcess:
    sfc = Path(sys.executable).with_name("sfc")
    return subprocess.run(
        [str(sfc), "verify", *argv], capture_output=True, text=True, timeout=120, check=False
    )


def test_an_intact_store_on_s3_verifies_deep(uploaded):
    _, url, store, _ = uploaded
    report = verify(store, deep=True)
    assert report.ok and report.store == store
    statuses = {p.part: p.status for p in report.parts}
    assert statuses["features/m"] == statuses["attention/r1"] == "ok"
    run = _sfc_verify(url, "--deep")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checked 1 stores" in run.stdout and "0 damaged" in run.stdout


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
def test_damage_on_s3_is_found_and_named(uploaded, how):
    fs, url, store, prefix = uploaded
    key = f"{prefix}/stores/A.zarr/{SCORES}"
    data = fs.cat_file(key)
    if how == "delete":
        fs.rm(key)
    elif how == "truncate":
        fs.pipe_file(key, data[: len(data) // 2])
    else:
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        fs.pipe_file(key, bytes(flipped))

    cheap, deep = verify(store), verify(store, deep=True)

    want = {"delete": "missing", "truncate": "wrong size", "flip": "checksum mismatch"}[how]
    assert deep.lines() == [f"{store}: part attention/r1: {want} {SCORES}"]
    assert cheap.ok == (how == "flip")  # a changed byte is seen by the deep check only
    run = _sfc_verify(url, "--deep")
    assert run.returncode == 1
    assert f"{store}: part attention/r1: {want} {SCORES}" in run.stdout
    assert "Traceback" not in run.stderr


def test_the_export_stage_and_verify_read_export_records_on_s3(uploaded):
    fs, url, store, prefix = uploaded
    stage = ExportStage(ExportConfig(run="r1"))
    assert stage.done(store)  # the record and files on S3 match the store on S3
    assert not ExportStage(ExportConfig(run="r1", precision=3)).done(store)  # another config
    assert [r.ok for r in verify_project(url, deep=True)] == [True, True]  # store, export
    fs.rm(f"{prefix}/exports/A.heatmap.png")
    assert not stage.done(store)  # a file the record lists is gone
    store_report, export_report = verify_project(url)
    assert store_report.ok
    assert export_report.lines() == [
        f"{url}/exports/A.export.json: part exports: missing A.heatmap.png"
    ]
