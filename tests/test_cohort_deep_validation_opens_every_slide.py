"""Deep validation opens every slide: unreadable files and missing calibration are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from slideflow_core.cohort import SLIDE_EXTENSIONS, Cohort
from slideflow_core.errors import MissingResolutionError

# The generic TIFFs whose only resolution is a 72-dpi placeholder.
NO_MPP = ("boxes.tiff", "pathml_small_HE_levels.tiff", "large-image_yb10kx5k.zstd.tiff")
BROKEN = ("unopenable.tiff", "unreadable.svs")


def _slide_files(slides_dir: Path) -> list[Path]:
    return sorted(p for p in slides_dir.iterdir() if p.suffix in SLIDE_EXTENSIONS)


def _manifest(tmp_path: Path, slides_dir: Path, mpp_for: dict[str, float]) -> Path:
    lines = ["slide_id,path,mpp"]
    for i, path in enumerate(_slide_files(slides_dir)):
        lines.append(f"s{i:02d},{path},{mpp_for.get(path.name, '')}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_deep_validation_names_unreadable_and_uncalibrated_slides(
    tmp_path: Path, slides_dir: Path
) -> None:
    # Calibrate two of the placeholder TIFFs so that only boxes.tiff lacks mpp.
    mpp = {"pathml_small_HE_levels.tiff": 0.5, "large-image_yb10kx5k.zstd.tiff": 0.25}
    cohort = Cohort.from_manifest(_manifest(tmp_path, slides_dir, mpp))
    assert cohort.validate().ok  # the files exist: only opening them finds problems
    report = cohort.validate(deep=True)
    names = {Path(cohort[p.slide_id].path).name: p for p in report.problems}
    assert sorted(names) == sorted(["boxes.tiff", *BROKEN])
    for name in BROKEN:
        problem = names[name]
        assert problem.column == "path"
        assert problem.message.startswith(f"unreadable: cannot read slide {slides_dir / name}")
        assert problem.hint
    boxes = names["boxes.tiff"]
    assert boxes.column == "mpp"
    assert "no microns-per-pixel calibration" in boxes.message
    assert "fill the manifest's mpp column" in boxes.hint
    # Lines point back into the manifest (the header is line 1).
    assert boxes.line == _slide_files(slides_dir).index(slides_dir / "boxes.tiff") + 2


def test_an_mpp_column_value_calibrates_a_slide_that_has_none(
    tmp_path: Path, slides_dir: Path
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,path,mpp\nboxes,{slides_dir / 'boxes.tiff'},0.25\n")
    cohort = Cohort.from_manifest(manifest)
    assert cohort.validate(deep=True).ok
    with cohort.open_slide("boxes") as slide:
        assert slide.mpp == 0.25
        assert slide.slide_id == "boxes"
    with cohort.open_slide("boxes", mpp=0.5) as slide:  # an explicit value wins
        assert slide.mpp == 0.5


def test_without_an_override_the_slide_refuses_to_guess(tmp_path: Path, slides_dir: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,path\nboxes,{slides_dir / 'boxes.tiff'}\n")
    with (
        Cohort.from_manifest(manifest).open_slide("boxes") as slide,
        pytest.raises(MissingResolutionError),
    ):
        _ = slide.mpp


def test_deep_validation_skips_files_already_reported_missing(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,path\ngone,{tmp_path / 'gone.svs'}\n")
    report = Cohort.from_manifest(manifest).validate(deep=True)
    assert [p.message.split(":")[0] for p in report.problems] == ["file not found"]


def test_from_folder_finds_every_slide_file_with_unique_ids(slides_dir: Path) -> None:
    cohort = Cohort.from_folder(slides_dir)
    assert len(cohort) == 14
    assert len(set(cohort.slide_ids)) == 14
    assert "qupath-export_OS-1-detail" in cohort  # .ome.tif drops both suffixes
    assert "CMU-1-Small-Region" in cohort
    assert all(r.patient_id == r.slide_id and r.line is None for r in cohort)
    assert cohort.validate().ok


def test_from_folder_applies_labels_patients_and_mpp(slides_dir: Path) -> None:
    labels = {
        "boxes": {"mpp": 0.25, "patient_id": "P1", "tumor": 1},
        "small": {"patient_id": "P1", "tumor": 0},
        "not-a-file": {"tumor": 1},
    }
    cohort = Cohort.from_folder(slides_dir, labels=labels)
    assert cohort["boxes"].mpp == 0.25
    assert cohort["small"].patient_id == "P1"
    assert cohort.label_columns == ("tumor",)
    assert cohort["small"].labels == {"tumor": 0}
    assert cohort["CMU-1-Small-Region"].labels == {"tumor": None}
    (problem,) = cohort.validate().problems
    assert problem.slide_id == "not-a-file"
    assert "labels given for a slide with no file" in problem.message


def test_from_folder_reports_an_empty_folder(tmp_path: Path) -> None:
    from slideflow_core.errors import ManifestError

    (tmp_path / "notes.txt").write_text("no slides here")
    with pytest.raises(ManifestError, match="no slide files found"):
        Cohort.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError):
        Cohort.from_folder(tmp_path / "absent")
