"""An invalid ``mpp`` in a manifest stops loading, naming the manifest, line and value.

A bad calibration read as "missing" would silently fall back to the file's own
(or to a placeholder), so every bad cell is listed at once; an empty cell still
means "use the file's calibration".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from slideflow_core.cohort import Cohort
from slideflow_core.errors import ManifestError

SFC = Path(sys.executable).with_name("sfc")
BAD = ["-0.5", "0", "abc", "inf", "-inf", "nan", "NaN", "352.8"]


def _manifest(tmp_path: Path, slides_dir: Path, mpps: list[str]) -> Path:
    small = slides_dir / "small.svs"
    rows = ["slide_id,path,mpp", *(f"s{i},{small},{mpp}" for i, mpp in enumerate(mpps))]
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("value", BAD)
def test_each_bad_value_is_an_error_naming_manifest_line_and_value(tmp_path, slides_dir, value):
    manifest = _manifest(tmp_path, slides_dir, ["0.25", value])
    with pytest.raises(ManifestError) as info:
        Cohort.from_manifest(manifest)
    error = info.value
    assert error.message.startswith(f"{manifest}: 1 invalid mpp value(s)")
    (problem,) = error.problems
    assert problem.startswith("line 3 (slide 's1', column 'mpp'): ")
    assert repr(value) in problem or f"mpp {float(value):g} " in problem
    assert "µm per pixel" in error.hint and "leave it empty" in error.hint


def test_every_bad_row_is_listed_at_once(tmp_path, slides_dir):
    manifest = _manifest(tmp_path, slides_dir, [*BAD, "", "0.5"])
    with pytest.raises(ManifestError) as info:
        Cohort.from_manifest(manifest)
    lines = [p.split(" ", 2)[1] for p in info.value.problems]
    assert lines == [str(n) for n in range(2, 2 + len(BAD))]


@pytest.mark.parametrize("empty", ["", "  ", "NA", "N/A", "null"])
def test_an_empty_cell_means_the_files_own_calibration(tmp_path, slides_dir, empty):
    cohort = Cohort.from_manifest(_manifest(tmp_path, slides_dir, [empty, "0.25"]))
    assert [r.mpp for r in cohort] == [None, 0.25]
    assert cohort.validate().ok


def test_frames_and_parquet_files_are_held_to_the_same_rule(tmp_path, slides_dir):
    small = str(slides_dir / "small.svs")
    frame = pd.DataFrame({"slide_id": ["a", "b", "c"], "path": [small] * 3})
    frame["mpp"] = [0.25, float("nan"), None]  # NaN is how pandas stores an empty cell
    assert [r.mpp for r in Cohort.from_manifest(frame)] == [0.25, None, None]
    frame["mpp"] = [0.25, -0.5, float("inf")]
    with pytest.raises(ManifestError) as info:
        Cohort.from_manifest(frame)
    assert info.value.message.startswith("manifest: 2 invalid mpp value(s)")
    assert [p.split(":")[0] for p in info.value.problems] == [
        "line 2 (slide 'b', column 'mpp')",
        "line 3 (slide 'c', column 'mpp')",
    ]
    parquet = tmp_path / "m.parquet"
    frame.to_parquet(parquet)
    with pytest.raises(ManifestError, match=f"{parquet}: 2 invalid mpp"):
        Cohort.from_manifest(parquet)


def test_folder_labels_with_a_bad_mpp_are_an_error(slides_dir):
    with pytest.raises(ManifestError) as info:
        Cohort.from_folder(slides_dir, labels={"small": {"mpp": 0}, "boxes": {"mpp": 0.25}})
    assert info.value.problems == [
        "slide 'small' (column 'mpp'): mpp must be a positive number of µm per pixel, got 0"
    ]


def test_sfc_cohort_validate_reports_every_bad_mpp(tmp_path, slides_dir):
    manifest = _manifest(tmp_path, slides_dir, ["0.25", "abc", "", "-0.5"])
    done = subprocess.run(
        [str(SFC), "cohort", "validate", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {manifest}: 2 invalid mpp value(s)")
    assert "line 3 (slide 's1', column 'mpp')" in done.stderr and "'abc'" in done.stderr
    assert "line 5 (slide 's3', column 'mpp')" in done.stderr and "'-0.5'" in done.stderr
    assert "hint: give level-0 µm per pixel" in done.stderr
    assert "Traceback" not in done.stderr
