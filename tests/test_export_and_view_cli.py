"""``sfc export`` writes GeoJSON (and heatmaps) per store; ``sfc view`` prints a working URL."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from importlib.metadata import entry_points

import pytest
from overlay_stores import make_store

import slideflow_core.cli
from slideflow_core.cli import main
from slideflow_core.geojson import read_geojson

# `sfc` with only the core's own commands: stage commands import ML libraries when the
# parser is built, which would dominate these tests' time without testing anything here.
CORE_SFC = """
import sys
from importlib.metadata import entry_points
import slideflow_core.cli as cli
cli.entry_points = lambda group: [
    e for e in entry_points(group=group) if e.value.startswith("slideflow_core.")
]
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def core_commands_only(monkeypatch):
    monkeypatch.setattr(
        slideflow_core.cli,
        "entry_points",
        lambda group: [
            e for e in entry_points(group=group) if e.value.startswith("slideflow_core.")
        ],
    )


def test_export_one_store_to_a_file_with_a_heatmap(tmp_path, capsys, cmu_svs):
    store = make_store(tmp_path, grid=(8, 11), slide_path=cmu_svs, dimensions=(2220, 2967))
    out, png = tmp_path / "S1.geojson.gz", tmp_path / "S1.png"
    code = main(
        ["export", str(store), "--what", "tiles", "--what", "tissue", "--run", "r1",
         "--out", str(out), "--heatmap", str(png)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "S1: 1 tissue, 88 tiles" in printed and f"heatmap: {png}" in printed
    kinds = [f.object_type for f in read_geojson(out)]
    assert kinds.count("tile") == 88 and kinds.count("annotation") == 1
    assert png.stat().st_size > 1000


def test_export_a_project_reports_each_slide_and_fails_only_the_bad_one(tmp_path, capsys):
    make_store(tmp_path, "A")
    make_store(tmp_path, "B", run=None)
    code = main(["export", str(tmp_path), "--run", "r1", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "1 done, 1 failed" in printed and "attention/r1" in printed
    assert f"exports: {tmp_path / 'exports'}" in printed
    files = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert files == ["A.export.json", "A.geojson.gz", "A.heatmap.png"]
    assert main(["export", str(tmp_path), "--run", "r1", "--no-progress"]) == 1
    assert "1 failed, 1 skipped" in capsys.readouterr().out  # A is current: not redone


def test_export_a_run_folder_to_a_folder_of_plain_geojson(tmp_path, capsys):
    make_store(tmp_path, "A")
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    out = tmp_path / "elsewhere"
    argv = ["export", str(tmp_path / "runs" / "r1"), "--out", str(out), "--no-gzip"]
    assert main([*argv, "--what", "tiles", "--no-heatmap", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["A.export.json", "A.geojson"]
    assert {f.object_type for f in read_geojson(out / "A.geojson")} == {"tile"}


def test_a_project_to_one_file_is_refused_with_a_hint(tmp_path, capsys):
    make_store(tmp_path, "A")
    code = main(["export", str(tmp_path), "--out", str(tmp_path / "one.geojson")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[0].startswith("error:") and "names one file" in err[0]
    assert err[1].startswith("hint:") and "--out exports/" in err[1] and "stores/" in err[1]
    assert len(err) == 2
    assert not (tmp_path / "one.geojson").exists() and not (tmp_path / "exports").exists()


@pytest.mark.parametrize("option", ["--heatmap", "--cells"])
def test_one_store_options_on_a_project_are_refused(tmp_path, capsys, option):
    make_store(tmp_path, "A")
    assert main(["export", str(tmp_path), option, str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {option} takes one store, not a project"
    assert err[1].startswith("hint:")


def test_one_store_to_a_folder_writes_its_file_inside(tmp_path, capsys):
    store = make_store(tmp_path, "S1")
    out = tmp_path / "folder"
    assert main(["export", str(store), "--what", "tiles", "--out", f"{out}/"]) == 0
    assert [p.name for p in out.iterdir()] == ["S1.geojson.gz"]
    assert str(out / "S1.geojson.gz") in capsys.readouterr().out
    assert main(["export", str(store), "--what", "tiles"]) == 1
    assert "--out is needed" in capsys.readouterr().err
    assert (
        main(["export", str(store), "--what", "tiles", "--out", str(out / "new" / "S1.ndjson")])
        == 0
    )
    assert (out / "new" / "S1.ndjson").is_file()  # a file's missing folders are made


def test_old_simplify_spelling_still_works(tmp_path, capsys):
    store = make_store(tmp_path, "S1")
    out = tmp_path / "S1.geojson"
    assert (
        main(["export", str(store), "--what", "tissue", "--out", str(out), "--simplify", "2"]) == 0
    )
    assert "--simplify is deprecated" in capsys.readouterr().err


def test_export_errors_are_one_line_with_a_hint(tmp_path, capsys):
    code = main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.geojson")])
    err = capsys.readouterr().err
    assert code == 1 and "no slide store found" in err and "hint:" in err


def test_view_prints_a_url_that_serves_the_slide(tmp_path, cmu_svs):
    make_store(tmp_path, "CMU", slide_path=cmu_svs, dimensions=(2220, 2967))
    process = subprocess.Popen(
        [sys.executable, "-c", CORE_SFC, "view", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("serving CMU")
        url = lines[1].split()[2]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/slides", timeout=10) as response:
            assert json.loads(response.read())[0]["id"] == "CMU"
    finally:
        process.terminate()
        process.wait(timeout=10)
