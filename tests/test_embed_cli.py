"""``sfc embed``: the CLI embeds a tiled project, exports TRIDENT files and reports errors."""

from __future__ import annotations

import pytest
from embedding_project import tile_project

from embedders import import_features
from slideflow_core.cli import main
from slideflow_core.features import read_features

pytestmark = pytest.mark.integration


def test_sfc_embed_writes_features_and_exports_h5(ray_session, cmu_svs, tmp_path, capsys):
    project = tile_project(tmp_path / "project", [{"slide_id": "cmu", "path": str(cmu_svs)}])
    out = tmp_path / "h5"
    args = ["embed", str(project), "--model", "handcrafted", "--export-h5", str(out)]
    assert main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 done" in printed
    assert "features/handcrafted" in printed
    bag = read_features(project / "stores" / "cmu.zarr", "handcrafted")
    (path,) = out.glob("*x_*px_0px_overlap/features_handcrafted/cmu.h5")  # TRIDENT job layout
    exported = import_features(path)
    assert exported.features.shape == bag.features.shape == (len(bag), 87)

    # A model that cannot be built: one error line with the fix, exit code 1.
    bad = ["embed", str(project), "--model", "dinov2_vits14", "--weights", str(tmp_path / "x")]
    assert main([*bad, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "does not exist" in err
    assert "hint:" in err


def test_sfc_embed_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--weights", "--batch-size", "--device", "--tiles", "--export-h5"):
        assert option in text
    assert "(default: float16)" in text


def test_an_unknown_model_is_named_with_close_names_and_the_timm_form(tmp_path, capsys):
    (tmp_path / "project" / "stores").mkdir(parents=True)
    assert main(["embed", str(tmp_path / "project"), "--model", "handcraftd"]) == 1
    err = capsys.readouterr().err
    assert "error: unknown embedder 'handcraftd'" in err and "handcrafted" in err
    assert "timm:<name>" in err and "Traceback" not in err


def test_a_missing_project_or_a_bad_setting_is_one_error_line(tmp_path, capsys):
    assert main(["embed", str(tmp_path / "nowhere"), "--model", "handcrafted"]) == 1
    err = capsys.readouterr().err
    assert "error: project folder not found" in err and "tile a cohort" in err
    assert not (tmp_path / "nowhere").exists()
    assert main(["embed", str(tmp_path), "--model", "handcrafted", "--batch-size", "0"]) == 1
    assert "batch_size must be a positive integer" in capsys.readouterr().err
