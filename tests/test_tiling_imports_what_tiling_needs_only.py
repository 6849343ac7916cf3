"""A process that tiles (a Ray worker, ``sfc``) imports what tiling needs and no more:
h5py (H5 export) and Dask (the cohort view) load on first use of the names needing them."""

from __future__ import annotations

import ast
import subprocess
import sys

HEAVY = ("h5py", "dask")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(run.stdout.strip())


def test_the_tiling_stage_and_its_commands_load_no_exporter_or_cohort_view():
    code = "import tiling.stage\nfrom slideflow_core.cli import build_parser\nbuild_parser()"
    assert _loaded_after(code) == []  # build_parser loads every stage's commands


def test_public_names_still_import_from_the_package():
    code = (
        "from tiling import TilingConfig, open_store, export_h5, tissue_detectors\n"
        "import tiling\n"
        "assert tiling.tile_slide.__module__ == 'tiling.stage'\n"
        "assert tissue_detectors.names() == ['clam', 'otsu']"
    )
    assert _loaded_after(code) == ["dask", "h5py"]
    failed = subprocess.run(
        [sys.executable, "-c", "import tiling; tiling.no_such_name"], capture_output=True, text=True
    )
    assert failed.returncode == 1 and "has no attribute 'no_such_name'" in failed.stderr
