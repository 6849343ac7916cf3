"""``sfc synth DIR --cohort N`` with a relative DIR writes a manifest readable from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from slideflow_core.cohort import Cohort
from slideflow_core.synthetic.cohort import manifest_annotations

SFC = Path(sys.executable).with_name("sfc")


def test_a_relative_output_folder_gives_paths_that_resolve_elsewhere(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    args = ["synth", "rel/dir", "--cohort", "2", "--width", "1024", "--height", "1024"]
    done = subprocess.run(
        [str(SFC), *args, "--slide-mpp", "0.5"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    manifest = work / "rel" / "dir" / "manifest.csv"
    monkeypatch.chdir(elsewhere)
    cohort = Cohort.from_manifest(manifest)
    assert len(cohort) == 2
    assert cohort.validate().ok
    for slide_id in cohort.slide_ids:
        assert Path(cohort[slide_id].path).parent == work / "rel" / "dir" / "slides"
        with cohort.open_slide(slide_id) as slide:
            assert slide.dimensions == (1024, 1024)
            assert slide.mpp == 0.5
    annotations = manifest_annotations(manifest)
    assert annotations  # at least one slide has tumour
    assert all(path.is_file() for path in annotations.values())
