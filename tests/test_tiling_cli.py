"""``sfc tile`` / ``sfc tiles``: the CLI drives the Python API end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from slideflow_core.cli import main

pytestmark = pytest.mark.integration


def test_sfc_tile_then_info_and_export(ray_session, cmu_svs, slides_dir, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {"slide_id": "cmu", "path": str(cmu_svs)},
            {"slide_id": "bad", "path": str(slides_dir / "unopenable.tiff")},
        ]
    ).to_csv(manifest, index=False)
    out = tmp_path / "project"
    code = main(
        ["tile", str(manifest), "--out", str(out), "--magnification", "10x", "--tile-px", "128",
         "--no-progress"]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1  # one slide failed...
    assert "1 done" in printed
    assert "1 failed" in printed
    assert (out / "stores" / "cmu.zarr" / "coords").is_dir()  # ...and the other was tiled

    assert main(["tiles", "info", str(out / "stores" / "cmu.zarr")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp_requested"] == 1.0
    assert info["tiles"] > 0

    assert main(["tiles", "export-h5", str(out), "--out", str(tmp_path / "h5")]) == 0
    assert (tmp_path / "h5" / "10x_128px_0px_overlap" / "patches" / "cmu_patches.h5").is_file()
    assert (
        main(["tiles", "export-h5", str(out), "--out", str(tmp_path / "c"), "--layout", "clam"])
        == 0
    )
    assert (tmp_path / "c" / "patches" / "cmu.h5").is_file()


def test_sfc_tile_help_lists_resolution_options_and_registry_choices(capsys):
    from tiling import stain_normalizers, tissue_detectors

    with pytest.raises(SystemExit):
        main(["tile", "--help"])
    text = capsys.readouterr().out
    for option in ("--target-mpp", "--magnification", "--overlap-px", "--coords-only"):
        assert option in text
    assert "--mpp" not in text and "--overlap " not in text  # old spellings are hidden
    assert "{" + ",".join(tissue_detectors.names()) + "}" in text
    assert "{" + ",".join(stain_normalizers.names()) + "}" in text
    assert "(default: 256)" in text


@pytest.fixture
def tiled_with(monkeypatch):
    """The tiling config ``sfc tile`` builds, captured instead of tiling."""
    import tiling.stage
    from slideflow_core.stages import CohortReport

    seen = {}

    def capture(manifest, out, config, **kwargs):
        seen["config"] = config
        return CohortReport(stage="tile", part="tiling", results=(), seconds=0.0, project=out)

    monkeypatch.setattr(tiling.stage, "tile_cohort", capture)
    return seen


def test_old_spellings_still_set_the_same_options(tiled_with, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("slide_id,path\na,a.svs\n")
    out = str(tmp_path / "p")
    assert main(["tile", str(manifest), "--out", out, "--mpp", "1", "--overlap", "16"]) == 0
    old = tiled_with["config"]
    assert (
        main(["tile", str(manifest), "--out", out, "--target-mpp", "1", "--overlap-px", "16"]) == 0
    )
    assert tiled_with["config"] == old
    assert (old.target_mpp, old.overlap_px) == (1.0, 16)
    err = capsys.readouterr().err
    assert "--mpp is deprecated" in err and "--overlap is deprecated" in err


def test_unknown_tissue_detector_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["tile", "m.csv", "--out", "p", "--tissue", "nope"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_missing_manifest_or_store_is_one_error_with_a_hint(tmp_path, capsys):
    assert main(["tile", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: manifest not found: {tmp_path / 'missing.csv'}"
    assert err[1].startswith("hint:") and "sfc cohort from-folder" in err[1]
    assert not (tmp_path / "x").exists()
    assert main(["tiles", "info", str(tmp_path / "S1.zarr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: slide store not found") and "stores/" in err[1]
