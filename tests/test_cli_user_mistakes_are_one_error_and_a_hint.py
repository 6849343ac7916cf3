"""A user's mistake prints ``error:`` and ``hint:`` (never a traceback) and exits 1."""

from __future__ import annotations

import pytest

from slideflow_core.cli import main


def _one_error_and_a_hint(capsys) -> list[str]:
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
    return lines


def test_a_missing_manifest_names_the_file_and_how_to_make_one(tmp_path, capsys):
    assert main(["cohort", "validate", str(tmp_path / "missing.csv")]) == 1
    error, hint = _one_error_and_a_hint(capsys)
    assert "missing.csv" in error and "sfc cohort from-folder" in hint


def test_a_missing_slide_folder(tmp_path, capsys):
    assert main(["cohort", "from-folder", str(tmp_path / "nope"), "--out", "m.csv"]) == 1
    error, _ = _one_error_and_a_hint(capsys)
    assert "slide folder not found" in error


def test_synth_into_a_folder_that_does_not_exist(tmp_path, capsys):
    out = tmp_path / "dir" / "that" / "does" / "not" / "exist" / "a.svs"
    assert main(["synth", str(out), "--width", "512", "--height", "512"]) == 1
    error, hint = _one_error_and_a_hint(capsys)
    assert str(out.parent) in error and "mkdir -p" in hint
    assert not (tmp_path / "dir").exists()


def test_a_bad_value_is_one_line_pointing_at_help(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "a.svs"), "--width", "-5"]) == 1
    error, hint = _one_error_and_a_hint(capsys)
    assert "width_px" in error and "sfc synth --help" in hint


def test_verbose_adds_the_traceback(tmp_path, capsys):
    assert main(["-v", "synth", str(tmp_path / "a.svs"), "--width", "-5"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: width_px" in err


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory", "x/y.svs"), "error: No such file"),
        (PermissionError(13, "Permission denied", "/root/x"), "error: Permission denied"),
        (IsADirectoryError("stores is a folder"), "error: stores is a folder"),
    ],
)
def test_standard_library_errors_of_a_command_become_one_line(monkeypatch, capsys, exc, expected):
    import slideflow_core.commands as commands

    def fail(args):
        raise exc

    monkeypatch.setattr(commands, "_run_info", fail)
    assert main(["info", "slide.svs"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(expected) and lines[1].startswith("hint:")
