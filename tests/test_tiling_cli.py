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
    assert (tmp_path / "h5" / "cmu_patches.h5").is_file()


def test_sfc_tile_help_lists_resolution_options(capsys):
    with pytest.raises(SystemExit):
        main(["tile", "--help"])
    text = capsys.readouterr().out
    assert "--mpp" in text
    assert "--magnification" in text
    assert "--coords-only" in text
