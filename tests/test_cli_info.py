"""``sfc info``: a useful table, thumbnails, one-line errors and non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from slideflow_core.cli import main


def test_info_prints_levels_mpp_and_vendor(cmu_svs, capsys):
    assert main(["info", str(cmu_svs)]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out
    assert "0.4990 µm/px" in out
    assert "2220 x 2967" in out
    assert "label" in out


def test_info_writes_a_thumbnail(cmu_svs, tmp_path, capsys):
    png = tmp_path / "thumbs" / "cmu.png"
    assert main(["info", str(cmu_svs), "--thumbnail", str(png), "--max-px", "300"]) == 0
    assert Image.open(png).size == (224, 300)
    assert str(png) in capsys.readouterr().out


def test_info_json_and_forced_backend(slides_dir, capsys):
    path = slides_dir / "hamamatsu_test3-DAPI-2-387.ndpi"
    assert main(["info", str(path), "--json", "--backend", "tiffslide"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["level_count"] == 4
    assert info["backend"]["reason"] == "forced by the caller"


def test_info_on_a_broken_slide_fails_with_error_and_hint(slides_dir, capsys):
    assert main(["info", str(slides_dir / "unreadable.svs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: cannot read slide")
    assert "unreadable.svs" in err[0]
    assert err[1].startswith("hint:")


def test_info_says_when_mpp_is_missing_and_how_to_fix_it(slides_dir, capsys):
    assert main(["info", str(slides_dir / "boxes.tiff")]) == 0
    assert "MISSING (pass --slide-mpp" in capsys.readouterr().out


def test_readers_are_listed(capsys):
    assert main(["info", "-", "--readers"]) == 0
    out = capsys.readouterr().out
    assert "openslide" in out and "tiffslide" in out


def test_sfc_entry_point_runs_as_a_program(cmu_svs):
    out = subprocess.run(
        [sys.executable, "-m", "slideflow_core.cli", "info", str(cmu_svs), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["slide_id"] == "CMU-1-Small-Region"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_old_mpp_spelling_still_works_with_a_warning(slides_dir, capsys):
    assert main(["info", str(slides_dir / "boxes.tiff"), "--mpp", "0.25", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mpp"] == 0.25
    assert "--mpp is deprecated" in captured.err and "--slide-mpp" in captured.err


def test_help_shows_defaults_and_the_new_flag_only(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    text = capsys.readouterr().out
    assert "--slide-mpp" in text and "(default: 1024)" in text
    assert "--mpp" not in text
