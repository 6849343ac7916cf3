"""ProjectLayout names every output of a cohort, and never from an unsafe id."""

from __future__ import annotations

from pathlib import Path

import pytest

from slideflow_core.cohort import ProjectLayout


def test_outputs_live_in_one_folder_per_kind(tmp_path: Path) -> None:
    layout = ProjectLayout(tmp_path / "project")
    root = tmp_path / "project"
    assert layout.root == root
    assert layout.store("S1") == root / "stores" / "S1.zarr"
    assert layout.thumbnail("S1") == root / "thumbnails" / "S1.png"
    assert layout.status("S1") == root / "status" / "S1.json"
    assert layout.run("abmil-fold0") == root / "runs" / "abmil-fold0"
    assert layout.exports == root / "exports"
    assert layout.logs == root / "logs"
    assert layout.manifest == root / "manifest.csv"


def test_ensure_creates_every_folder_and_is_repeatable(tmp_path: Path) -> None:
    layout = ProjectLayout(str(tmp_path / "p")).ensure().ensure()
    for folder in ("stores", "thumbnails", "status", "runs", "exports", "logs"):
        assert (tmp_path / "p" / folder).is_dir()
    assert layout.store("a").parent.is_dir()


@pytest.mark.parametrize("hostile", ["../../etc", "a/b", "x\x00y", "..", "CON", ".zarr", ""])
def test_hostile_ids_never_become_paths(tmp_path: Path, hostile: str) -> None:
    layout = ProjectLayout(tmp_path)
    for method in (layout.store, layout.thumbnail, layout.status):
        with pytest.raises(ValueError, match="unsafe slide id"):
            method(hostile)
    with pytest.raises(ValueError, match="unsafe run name"):
        layout.run(hostile)


def test_a_uri_root_is_refused_rather_than_mangled() -> None:
    with pytest.raises(ValueError, match="local folder"):
        ProjectLayout("s3://bucket/project")  # type: ignore[arg-type]


def test_describe_lists_every_entry_under_the_root(tmp_path: Path) -> None:
    text = ProjectLayout(tmp_path).describe()
    assert text.splitlines()[0] == f"{tmp_path}/"
    for entry in (
        "manifest.csv",
        "stores/<slide_id>.zarr",
        "thumbnails/<slide_id>.png",
        "status/<slide_id>.json",
        "runs/<run_name>/",
        "exports/",
        "logs/",
    ):
        assert entry in text
    assert "tiles, coords, features, attention, cells" in text
