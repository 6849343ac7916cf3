"""The ground floor never imports a stage: layers point one way only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

STAGES = ("tiling", "embedders", "mil", "cluster")
CORE = Path(__file__).resolve().parents[1] / "slideflow_core"


def test_importing_the_core_loads_no_stage():
    code = (
        "import sys, slideflow_core, slideflow_core.cli, slideflow_core.commands, "
        "slideflow_core.slides, slideflow_core.cohort, slideflow_core.store, "
        "slideflow_core.synthetic, slideflow_core.geojson, slideflow_core.ray_runtime\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {STAGES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_core_module_names_a_stage_in_an_import():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in STAGES]
    assert offenders == []


def test_stage_commands_plug_in_through_entry_points():
    from slideflow_core.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"info", "cohort", "synth", "tile", "tiles"} <= set(commands)
