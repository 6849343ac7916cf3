"""``sfc segment``: the shared vocabulary, old spellings still work, mistakes say what to do."""

from __future__ import annotations

import json

import pytest
from cells_fixtures import sparse_slide, tiled_store

from slideflow_core.cli import main


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segment-cli")
    path, _ = sparse_slide(folder, width_px=1024, height_px=1024, n_tissue_regions=1)
    return folder, path


def test_help_shows_the_new_words_and_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in ("--target-mpp", "--slide-mpp", "--overlap-px", "--segmenter NAME"):
        assert option in text
    assert "--seg-mpp" not in text and "--mpp " not in text
    assert "(default: classical)" in text and "(default: 1024)" in text


def test_an_unknown_segmenter_is_refused_with_the_registered_names(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "x", "--segmenter", "clasical"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'clasical'" in err and "'classical'" in err


def test_old_spellings_work_with_a_warning(slide, capsys):
    folder, path = slide
    store = tiled_store(folder, path)
    args = ["segment", str(store), "--tile-px", "256", "--seg-mpp", "0.4", "--name", "old"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "--seg-mpp is deprecated" in captured.err and "--target-mpp" in captured.err
    outcome = json.loads(captured.out)
    assert outcome["status"] == "done" and outcome["details"]["n_cells"] > 10
    assert outcome["details"]["mpp"] == pytest.approx(0.4, rel=0.05)  # not the default 0.5

    # The slide is 1024 px at 0.25 µm/px: 2 x 2 cores of 256 px at 0.5 µm/px. Calibrated
    # as 0.5 µm/px instead, it is twice as wide in µm: 4 x 4 cores.
    out = folder / "cells.parquet"
    args = ["segment", str(path), "--out", str(out), "--mpp", "0.5", "--tile-px", "256"]
    assert main([*args, "--all-tiles"]) == 0
    captured = capsys.readouterr()
    assert "--mpp is deprecated" in captured.err and "--slide-mpp" in captured.err
    outcome = json.loads(captured.out)
    assert outcome["store"] == str(out) and out.is_file()
    assert outcome["n_tiles"] == 16


def test_a_missing_target_is_one_error_line_with_a_hint(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "error: not found" in err and "hint:" in err
