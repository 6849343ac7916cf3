"""The ground floor never imports a stage: layers point one way only."""

from __future__ import annotations

import subprocess
import sys

STAGES = ("tiling", "embedders", "mil", "cluster")


def test_importing_the_core_and_its_cli_loads_no_stage():
    code = (
        "import sys, slideflow_core, slideflow_core.cli, slideflow_core.commands, "
        "slideflow_core.slides\n"
        "slideflow_core.cli.build_parser()\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {STAGES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
