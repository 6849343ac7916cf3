"""Validation reports every bad row of a manifest at once, with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from slideflow_core.cohort import Cohort, Problem, SlideRecord, ValidationReport
from slideflow_core.errors import ManifestError


@pytest.fixture
def bad_manifest(tmp_path: Path, slides_dir: Path) -> Path:
    small = slides_dir / "small.svs"
    rows = [
        "slide_id,path,patient_id,mpp,grade",  # line 1
        f"good,{small},P1,,1",  # 2: fine
        f",{small},P2,,2",  # 3: empty slide_id
        f"good,{slides_dir / 'boxes.tiff'},P3,,1",  # 4: duplicate of line 2
        f"../../etc,{small},,,1",  # 5: path traversal in the id
        f"missing,{tmp_path / 'nope.svs'},,,1",  # 6: file not found
        f"\x1b[31mred,{small},,,1",  # 7: a terminal escape sequence in the id
        f"folder,{slides_dir},,,2",  # 8: a folder, not a file
        "nopath,,,,1",  # 9: empty path
        f"textgrade,{small},,,high",  # 10: text in a numeric label column
        f"CON,{small},,,1",  # 11: Windows device name
        f"ragged,{small},,,1,extra",  # 12: one field too many
        f" padded,{small},,,1",  # 13: leading whitespace in the id
        f"fine,{slides_dir / 'CMU-1-Small-Region.svs'},P1,0.5,2",  # 14: fine
    ]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _by_line(report: ValidationReport) -> dict[int | None, list[Problem]]:
    out: dict[int | None, list[Problem]] = {}
    for problem in report.problems:
        out.setdefault(problem.line, []).append(problem)
    return out


def test_every_kind_of_bad_row_is_reported_in_one_report(bad_manifest: Path) -> None:
    cohort = Cohort.from_manifest(bad_manifest)  # loading does not stop at bad rows
    assert len(cohort) == 13
    report = cohort.validate()
    by_line = _by_line(report)
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    expected = {
        3: ("slide_id", "slide_id is empty"),
        4: ("slide_id", "duplicate slide_id 'good', already used on line 2"),
        5: ("slide_id", "unsafe slide_id '../../etc'"),
        6: ("path", "file not found"),
        7: ("slide_id", "unsafe slide_id '\\x1b[31mred': contains the control character"),
        8: ("path", "path is a folder, not a slide file"),
        9: ("path", "path is empty"),
        10: ("grade", "label column 'grade' mixes number and text values"),
        11: ("slide_id", "reserved device name"),
        12: (None, "has 6 fields but the header has 5"),
        13: ("slide_id", "starts or ends with whitespace"),
    }
    for line, (column, text) in expected.items():
        (problem,) = by_line[line]
        assert problem.column == column, problem
        assert text in problem.message, problem
        assert problem.hint, problem
    assert report.n_rows == 13
    assert report.n_bad_rows == 11
    assert not report.ok
    assert [p.line for p in report.problems] == sorted(p.line for p in report.problems)


def test_problems_read_as_sentences_with_line_slide_and_fix(bad_manifest: Path) -> None:
    report = Cohort.from_manifest(bad_manifest).validate()
    (missing,) = _by_line(report)[6]
    assert str(missing).startswith("line 6 (slide 'missing', column 'path'): file not found: ")
    assert " — fix the path" in str(missing)
    (mixed,) = _by_line(report)[10]
    # The rare kind is the likely typo; the column and example lines are named.
    assert "number on lines 2, 3, 4 and 9 more; text on line 10" in mixed.message
    summary = str(report)
    assert summary.splitlines()[0] == f"{bad_manifest}: 11 problem(s) in 11 of 13 rows"
    assert all(f"line {n} " in summary for n in range(3, 14))
    assert "\x1b" not in summary and "line 7 (slide '\\x1b[31mred'" in summary


def test_raise_for_problems_lists_every_problem(bad_manifest: Path) -> None:
    report = Cohort.from_manifest(bad_manifest).validate()
    with pytest.raises(ManifestError) as caught:
        report.raise_for_problems()
    assert len(caught.value.problems) == 11
    assert caught.value.problems == [str(p) for p in report.problems]
    assert "line 12" in str(caught.value)


def test_a_clean_cohort_passes_and_raises_nothing(tmp_path: Path, slides_dir: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"slide_id,path,label\na,{slides_dir / 'small.svs'},x\n")
    report = Cohort.from_manifest(path).validate()
    assert report.ok
    report.raise_for_problems()
    assert str(report).startswith(f"{path}: 1 slide, no problems")


def test_file_checks_can_be_skipped_for_manifests_written_elsewhere(bad_manifest: Path) -> None:
    report = Cohort.from_manifest(bad_manifest).validate(check_files=False)
    assert 6 not in _by_line(report)
    assert 9 in _by_line(report)  # an empty path is wrong wherever the files are


def test_an_empty_manifest_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("slide_id,path\n")
    report = Cohort.from_manifest(path).validate()
    assert [p.message for p in report.problems] == ["no slides in the manifest"]


def test_validation_reports_problems_of_records_built_in_code(slides_dir: Path) -> None:
    records = [
        SlideRecord("a", str(slides_dir / "small.svs"), "a", labels={"flag": True}),
        SlideRecord("b", str(slides_dir / "small.svs"), "b", labels={"flag": "yes"}),
        SlideRecord("a", str(slides_dir / "boxes.tiff"), "a", labels={"flag": False}),
    ]
    report = Cohort(records).validate()
    messages = [str(p) for p in report.problems]
    assert messages[0].startswith("slide 'a' (column 'slide_id'): duplicate slide_id 'a', already")
    assert str(slides_dir / "small.svs") in messages[0]
    mixed = "mixes boolean and text values: boolean on slides 'a', 'a'; text on slide 'b'"
    assert mixed in messages[1]
