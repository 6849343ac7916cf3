"""A valid manifest loads the same from CSV, TSV, Parquet and a DataFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from slideflow_core.cohort import Cohort, SlideRecord
from slideflow_core.errors import ManifestError


def _frame(slides_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": ["cmu", "small", "boxes"],
            "path": [
                str(slides_dir / "CMU-1-Small-Region.svs"),
                str(slides_dir / "small.svs"),
                str(slides_dir / "boxes.tiff"),
            ],
            "patient_id": ["P1", "P1", None],
            "mpp": [None, None, 0.25],
            "grade": [1, 3, None],
            "site": ["skin", "lung", "skin"],
        }
    )


def _check(cohort: Cohort, slides_dir: Path) -> None:
    assert cohort.slide_ids == ("cmu", "small", "boxes")
    assert cohort.label_columns == ("grade", "site")
    assert cohort["cmu"].path == str(slides_dir / "CMU-1-Small-Region.svs")
    assert cohort["boxes"].patient_id == "boxes"  # no patient_id: the slide is its own patient
    assert cohort.patient_ids == ("P1", "boxes")
    assert cohort["boxes"].mpp == 0.25
    assert cohort["cmu"].mpp is None
    assert dict(cohort["small"].labels) == {"grade": 3, "site": "lung"}
    assert cohort["boxes"].labels["grade"] is None
    assert cohort.validate().ok


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".pq"])
def test_manifest_files_of_every_type_load_alike(
    tmp_path: Path, slides_dir: Path, suffix: str
) -> None:
    frame = _frame(slides_dir)
    path = tmp_path / f"manifest{suffix}"
    if suffix in (".csv", ".tsv"):
        frame.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    else:
        frame.to_parquet(path, index=False)
    cohort = Cohort.from_manifest(path)
    _check(cohort, slides_dir)
    assert cohort.source == str(path)


def test_a_dataframe_is_a_manifest_too(slides_dir: Path) -> None:
    _check(Cohort.from_manifest(_frame(slides_dir)), slides_dir)


def test_csv_lines_count_from_the_header_as_line_1(tmp_path: Path, slides_dir: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        f"slide_id,path\n\na,{slides_dir / 'small.svs'}\nb,{slides_dir / 'boxes.tiff'}\n"
    )
    cohort = Cohort.from_manifest(path)
    # The blank line is skipped but still counted, so lines match an editor's.
    assert [r.line for r in cohort] == [3, 4]


def test_relative_paths_resolve_against_the_manifest_folder(
    tmp_path: Path, slides_dir: Path
) -> None:
    (tmp_path / "slides").symlink_to(slides_dir)
    sub = tmp_path / "meta"
    sub.mkdir()
    (sub / "m.csv").write_text("slide_id,path\na,../slides/small.svs\nb,s3://bucket/b.svs\n")
    cohort = Cohort.from_manifest(sub / "m.csv")
    assert cohort["a"].path == str(tmp_path / "slides" / "small.svs")
    assert cohort["b"].path == "s3://bucket/b.svs"
    assert cohort["b"].is_remote
    assert cohort.validate().ok  # URIs are not checked for existence


def test_root_overrides_the_folder_relative_paths_start_from(
    tmp_path: Path, slides_dir: Path
) -> None:
    (tmp_path / "m.csv").write_text("slide_id,path\na,small.svs\n")
    cohort = Cohort.from_manifest(tmp_path / "m.csv", root=slides_dir)
    assert cohort["a"].path == str(slides_dir / "small.svs")


def test_file_uris_become_local_paths(tmp_path: Path, slides_dir: Path) -> None:
    uri = (slides_dir / "small.svs").as_uri()
    (tmp_path / "m.csv").write_text(f"slide_id,path\na,{uri}\n")
    assert Cohort.from_manifest(tmp_path / "m.csv")["a"].path == str(slides_dir / "small.svs")


def test_missing_required_columns_are_named_with_the_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("Slide,filename,grade\na,a.svs,1\n")
    with pytest.raises(ManifestError) as caught:
        Cohort.from_manifest(path)
    error = caught.value
    assert "'slide_id'" in error.message and "'path'" in error.message
    assert "columns found: 'Slide', 'filename', 'grade'" in error.message
    assert error.problems == [
        "missing required column 'slide_id'",
        "missing required column 'path'",
    ]
    assert "rename column 'Slide' to 'slide_id'" in error.hint
    assert "rename column 'filename' to 'path'" in error.hint


def test_duplicate_and_unnamed_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("slide_id,path,grade,grade\na,a.svs,1,2\n")
    with pytest.raises(ManifestError, match="duplicate column name"):
        Cohort.from_manifest(path)
    path.write_text("slide_id,,path\na,x,a.svs\n")
    with pytest.raises(ManifestError, match="column\\(s\\) 2 have no name"):
        Cohort.from_manifest(path)


def test_trailing_empty_header_cells_from_spreadsheets_are_ignored(
    tmp_path: Path, slides_dir: Path
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"slide_id,path,,\na,{slides_dir / 'small.svs'},,\n")
    cohort = Cohort.from_manifest(path)
    assert cohort.label_columns == ()
    assert cohort.validate().ok


def test_unusable_manifest_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        Cohort.from_manifest(tmp_path / "absent.csv")
    (tmp_path / "m.xlsx").write_bytes(b"PK")
    with pytest.raises(ManifestError, match=r"unsupported manifest type '\.xlsx'"):
        Cohort.from_manifest(tmp_path / "m.xlsx")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(ManifestError, match="empty"):
        Cohort.from_manifest(tmp_path / "empty.csv")
    (tmp_path / "latin1.csv").write_bytes("slide_id,path\ncafé,x.svs\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        Cohort.from_manifest(tmp_path / "latin1.csv")


def test_records_are_frozen_hashable_and_picklable(slides_dir: Path) -> None:
    import pickle

    record = Cohort.from_manifest(_frame(slides_dir))["cmu"]
    assert isinstance(record, SlideRecord)
    with pytest.raises(AttributeError):
        record.slide_id = "other"  # type: ignore[misc]
    assert hash(record) == hash(pickle.loads(pickle.dumps(record)))
    assert pickle.loads(pickle.dumps(record)) == record


def test_a_quoted_value_spanning_lines_keeps_later_line_numbers_true(
    tmp_path: Path, slides_dir: Path
) -> None:
    small = slides_dir / "small.svs"
    path = tmp_path / "m.csv"
    path.write_text(f'slide_id,path,note\na,{small},"two\nlines"\nb,{small},x\n')
    cohort = Cohort.from_manifest(path)
    assert cohort["a"].labels["note"] == "two\nlines"
    assert [r.line for r in cohort] == [2, 4]


def test_a_frame_indexed_by_slide_id_is_accepted(slides_dir: Path) -> None:
    cohort = Cohort.from_manifest(_frame(slides_dir).set_index("slide_id"))
    assert cohort.slide_ids == ("cmu", "small", "boxes")


def test_remote_manifests_are_refused_with_a_way_forward() -> None:
    with pytest.raises(ManifestError, match="local files") as caught:
        Cohort.from_manifest("s3://bucket/manifest.csv")
    assert "DataFrame" in caught.value.hint
