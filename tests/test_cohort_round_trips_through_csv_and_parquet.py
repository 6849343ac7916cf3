"""A cohort written out reads back as the same records; subsets and lookups behave."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from slideflow_core.cohort import Cohort, SlideRecord


@pytest.fixture
def cohort(slides_dir: Path) -> Cohort:
    records = [
        SlideRecord(
            "cmu",
            str(slides_dir / "CMU-1-Small-Region.svs"),
            "P1",
            None,
            {"grade": 2, "score": 0.1, "site": "skin, left arm"},
        ),
        SlideRecord("boxes", str(slides_dir / "boxes.tiff"), "P2", 0.25, {"grade": None}),
        SlideRecord("small", str(slides_dir / "small.svs"), "P1", None, {"site": "lung"}),
    ]
    return Cohort(records, label_columns=("grade", "score", "site"))


def _without_lines(cohort: Cohort) -> list[SlideRecord]:
    return [replace(r, line=None, labels=dict(r.labels)) for r in cohort]


@pytest.mark.parametrize("name", ["cohort.csv", "cohort.tsv", "cohort.parquet"])
def test_write_then_read_gives_the_same_records(tmp_path: Path, cohort: Cohort, name: str) -> None:
    written = cohort.write(tmp_path / "out" / name)
    assert written == tmp_path / "out" / name
    assert not list((tmp_path / "out").glob("*.partial"))
    back = Cohort.from_manifest(written)
    expected = [
        replace(r, labels={c: r.labels.get(c) for c in cohort.label_columns}) for r in cohort
    ]
    assert _without_lines(back) == expected
    assert back.label_columns == cohort.label_columns
    assert type(back["cmu"].labels["grade"]) is int  # 2 stays 2, not 2.0


def test_to_frame_has_fixed_columns_then_typed_labels(cohort: Cohort) -> None:
    frame = cohort.to_frame()
    fixed = ["slide_id", "path", "patient_id", "mpp"]
    assert list(frame.columns) == [*fixed, *cohort.label_columns]
    assert str(frame["grade"].dtype) == "Int64"
    assert frame["mpp"].isna().tolist() == [True, False, True]


def test_write_refuses_an_unknown_suffix(tmp_path: Path, cohort: Cohort) -> None:
    with pytest.raises(ValueError, match="cannot tell the manifest type"):
        cohort.write(tmp_path / "cohort.json")


def test_subset_keeps_cohort_order_and_names_unknown_ids(cohort: Cohort) -> None:
    assert cohort.subset(["small", "cmu"]).slide_ids == ("cmu", "small")
    assert cohort.subset("boxes").slide_ids == ("boxes",)
    with pytest.raises(KeyError, match="2 slide id\\(s\\) not in the cohort: 'x', 'y'"):
        cohort.subset(["cmu", "x", "y"])


def test_lookup_by_id_and_ambiguous_ids(cohort: Cohort, slides_dir: Path) -> None:
    assert cohort["small"].patient_id == "P1"
    assert "small" in cohort and "nope" not in cohort
    with pytest.raises(KeyError, match="no slide 'nope'"):
        cohort["nope"]
    twice = Cohort([*cohort, SlideRecord("small", str(slides_dir / "boxes.tiff"), "P3", line=9)])
    with pytest.raises(KeyError, match="ambiguous"):
        twice["small"]
    assert repr(cohort) == "Cohort(3 slides, 2 patients, labels=['grade', 'score', 'site'])"


def test_subset_keeps_only_its_own_load_problems(tmp_path: Path, slides_dir: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"slide_id,path,mpp\na,{slides_dir / 'small.svs'},,ragged\nb,{slides_dir / 'small.svs'},\n"
    )
    cohort = Cohort.from_manifest(manifest)
    assert not cohort.validate().ok
    assert cohort.subset(["b"]).validate().ok
    assert not cohort.subset(["a"]).validate().ok
