"""``sfc cohort validate|from-folder`` and ``sfc synth``: exit codes and what they print."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from slideflow_core.cli import main
from slideflow_core.slides import open_slide


def test_validate_prints_every_problem_and_exits_1(slides_dir, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {"slide_id": "ok", "path": str(slides_dir / "small.svs")},
            {"slide_id": "../x", "path": str(slides_dir / "small.svs")},
            {"slide_id": "gone", "path": str(tmp_path / "gone.svs")},
            {"slide_id": "corrupt", "path": str(slides_dir / "unreadable.svs")},
        ]
    ).to_csv(manifest, index=False)
    assert main(["cohort", "validate", str(manifest), "--deep"]) == 1
    out = capsys.readouterr().out
    assert "line 3" in out
    assert "line 4" in out
    assert "line 5" in out
    assert "unreadable.svs" in out
    assert main(["cohort", "validate", str(manifest), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)
    assert {p["line"] for p in problems} == {3, 4}


def test_from_folder_writes_a_manifest_that_validates(slides_dir, tmp_path, capsys):
    manifest = tmp_path / "cohort.csv"
    assert main(["cohort", "from-folder", str(slides_dir), "--out", str(manifest)]) == 0
    assert "wrote 14 slides" in capsys.readouterr().out
    assert main(["cohort", "validate", str(manifest)]) == 0


def test_missing_manifest_columns_is_one_error_with_a_hint(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("slide,file\na,b.svs\n")
    assert main(["cohort", "validate", str(manifest)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "slide_id" in err


def test_synth_writes_a_slide_and_its_truth(tmp_path, capsys):
    out = tmp_path / "s.svs"
    code = main(["synth", str(out), "--width", "2048", "--height", "1536", "--slide-mpp", "0.5"])
    assert code == 0
    assert "ground truth" in capsys.readouterr().out
    assert out.with_suffix(".truth.json").is_file()
    with open_slide(out) as slide:
        assert slide.dimensions == (2048, 1536)
        assert slide.mpp == 0.5


def test_synth_cohort_writes_labelled_slides_manifest_and_outlines(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["synth", str(out), "--cohort", "4", "--width", "1024", "--height", "1024"]
    assert main([*args, "--slide-mpp", "0.5"]) == 0
    assert "with tumour" in capsys.readouterr().out
    frame = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert set(frame["label"]) == {"tumour", "normal"}
    tumour = frame[frame["label"] == "tumour"]
    assert (tumour["n_tumour_regions"] > 0).all() and all(
        Path(a).is_file() for a in tumour["annotation"]
    )
    assert (frame.loc[frame["label"] == "normal", "annotation"] == "").all()
    assert all(Path(p).is_file() for p in frame["path"])
