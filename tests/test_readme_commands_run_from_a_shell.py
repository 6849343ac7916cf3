"""Every ``sfc`` command of the README runs from a shell, in a folder set up as a user's.

Each ```bash block of README.md is read, and each line starting with ``sfc `` (with
its backslash continuations joined and its trailing ``# comment`` dropped) is looked
up in :data:`COMMANDS`, which maps the README's text to the command run here: the
README's placeholders (``slide.svs``, ``manifest.csv``, ``project``...) exist in the
prepared folder, and sizes written for a real cohort are cut to seconds. A README
command the table does not hold fails, so a new command cannot go untested.

Every command runs as a fresh process of the installed ``sfc`` script, never in
this process, in its own copy of the prepared folder, and must exit 0 without a
traceback. The prepared folder is itself made with ``sfc``: four slides, a manifest
with labels, and a project tiled, embedded, segmented and with a MIL run ``abmil``.
Ray commands connect to one local Ray instance through ``RAY_ADDRESS`` (the
README's "local Ray (or $RAY_ADDRESS)") instead of each starting its own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from overlay_stores import make_store

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
SFC = shutil.which("sfc", path=os.path.dirname(sys.executable))
AS_WRITTEN = "="

#: README command (as the README writes it) -> the command run in the prepared folder.
#: Add a README command here when you add it there; say why when it is not run as written.
#: The prepared project has features ``handcrafted``, a ``label`` column (tumour/normal)
#: and the MIL run ``abmil`` (from MIL_RUN); a README command that needs another file
#: (a YAML block of the README) gets it written in ``prepared``, as pipeline.yaml is.
COMMANDS: dict[str, str] = {
    "sfc info slide.svs": AS_WRITTEN,
    "sfc info slide.svs --thumbnail thumb.png": AS_WRITTEN,
    "sfc info scan.tiff --slide-mpp 0.25 --json": AS_WRITTEN,
    "sfc info - --readers": AS_WRITTEN,
    "sfc cohort from-folder slides/ --out manifest.csv": AS_WRITTEN,
    "sfc cohort validate manifest.csv --deep": AS_WRITTEN,
    # A 50,000 px slide takes minutes to write; the same command at 2,048 px.
    "sfc synth big.svs --width 50000 --height 50000 --slide-mpp 0.25": (
        "sfc synth big.svs --width 2048 --height 2048 --slide-mpp 0.25"
    ),
    "sfc synth cohort/ --cohort 40 --width 8192 --height 8192 --slide-mpp 0.5": (
        "sfc synth cohort/ --cohort 4 --width 1024 --height 1024 --slide-mpp 0.5"
    ),
    # The prepared project is tiled already: these tile a new one from scratch.
    "sfc tile manifest.csv --out project --target-mpp 0.5 --tile-px 256": (
        "sfc tile manifest.csv --out new-project --target-mpp 0.5 --tile-px 256"
    ),
    "sfc tile manifest.csv --out project --coords-only": (
        "sfc tile manifest.csv --out new-project --coords-only"
    ),
    "sfc tiles info project/stores/CMU-1.zarr": AS_WRITTEN,
    "sfc tiles export-h5 project --out trident_job/": AS_WRITTEN,
    "sfc tiles export-h5 project --out clam_h5/ --layout clam": AS_WRITTEN,
    "sfc embed project --model handcrafted": AS_WRITTEN,
    # UNI's weights are gated and not here: the same options with the weight-free embedder.
    "sfc embed project --model uni --weights uni.safetensors --export-h5 exports/ "
    "--h5-layout clam": "sfc embed project --model handcrafted --export-h5 exports/ "
    "--h5-layout clam",
    # pipeline.yaml is the README's YAML with a local run_dir and the weight-free embedder.
    "sfc run manifest.csv --config pipeline.yaml": AS_WRITTEN,
    "sfc export project/stores/S1.zarr --what all --run abmil --out S1.geojson.gz": AS_WRITTEN,
    "sfc export project/runs/abmil --out exports/": AS_WRITTEN,
    # S1.zarr: a store of the prepared project.
    "sfc export S1.zarr --what tiles --out S1.geojson --heatmap S1.png --keep-only "
    "--tile-type detection": "sfc export project/stores/S1.zarr --what tiles --out S1.geojson "
    "--heatmap S1.png --keep-only --tile-type detection",
    "sfc view project": AS_WRITTEN,
    "sfc segment project": AS_WRITTEN,
    "sfc segment slide.svs --out cells.parquet": AS_WRITTEN,
    "sfc segment --list": AS_WRITTEN,
    "sfc export project --what cells --out exports/": AS_WRITTEN,
    # ANNOTATED_FOLDER: the shipped nuclei tiles; two steps, not a real training.
    "sfc cells train ANNOTATED_FOLDER --out nuclei.safetensors --hold-out": (
        "sfc cells train nuclei --out nuclei.safetensors --hold-out --steps 2 --batch-size 2 "
        "--crop-px 128 --no-progress"
    ),
    # nuclei.safetensors: two steps of training (prepared); one store, not the four.
    "sfc segment project --segmenter learned --weights nuclei.safetensors --target-mpp 0.5": (
        "sfc segment project/stores/S1.zarr --segmenter learned --weights nuclei.safetensors "
        "--target-mpp 0.5"
    ),
    # tumour-abmil.yaml is the README's run YAML, whose paths name the prepared project.
    "sfc mil train tumour-abmil.yaml": AS_WRITTEN,
    # The prepared project's trained run is ``abmil``; predict it again under a new name.
    "sfc mil report project/runs/tumour-abmil": "sfc mil report project/runs/abmil",
    "sfc mil predict project/runs/tumour-abmil other-project --manifest other.csv": (
        "sfc mil predict project/runs/abmil project --manifest manifest.csv --name again"
    ),
}

#: Commands that serve until stopped: the test waits for their URL, fetches it, stops them.
SERVERS = {"sfc view project"}

#: Commands that need a Ray cluster's Jobs API (``http://HEAD:8265``): only those may be
#: left to the named test, which runs them against a real cluster.
ELSEWHERE: dict[str, str] = {
    "sfc submit manifest.csv --config pipeline.yaml --address http://HEAD:8265 "
    "--env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY": (
        "test_cluster_submit_runs_the_pipeline_through_the_jobs_api.py"
    ),
    "sfc status JOB --address http://HEAD:8265": (
        "test_cluster_submit_runs_the_pipeline_through_the_jobs_api.py"
    ),
    "sfc logs JOB --address http://HEAD:8265": (
        "test_cluster_submit_runs_the_pipeline_through_the_jobs_api.py"
    ),
    "sfc cancel JOB --address http://HEAD:8265": (
        "test_cluster_submit_runs_the_pipeline_through_the_jobs_api.py"
    ),
}

#: The MIL run of the prepared project (four slides: two folds of two).
MIL_RUN = {
    "name": "abmil",
    "data": {
        "manifest": "manifest.csv",
        "project": "project",
        "features": "handcrafted",
        "label": "label",
    },
    "model": "abmil",
    "splits": {"method": "kfold", "k": 2, "val_fraction": 0.0},
    "train": {"epochs": 2, "batch_size": 1},
    "heatmaps": 1,
}


def readme_commands(text: str) -> list[str]:
    """The ``sfc`` lines of the text's ```bash blocks, continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("sfc "):
                commands.append(" ".join(line.split()))
    return commands


def readme_yaml(text: str) -> list[dict]:
    """The README's ```yaml blocks, parsed."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [yaml.safe_load(block) for block in blocks]


def sfc(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (``sfc ...``) as a new process of the installed script."""
    argv = shlex.split(command)
    assert argv[0] == "sfc", command
    return subprocess.run(
        [SFC, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def check(result: subprocess.CompletedProcess[str], command: str) -> None:
    output = (
        f"$ {command}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    assert result.returncode == 0, output
    assert "Traceback" not in result.stdout + result.stderr, output


def pipeline_yaml(text: str) -> dict | None:
    """The README's pipeline YAML, run here: a local run folder, the weight-free embedder,
    and the prepared project's trained run ``abmil`` for prediction and export."""
    found = [block for block in readme_yaml(text) if isinstance(block, dict) and "stages" in block]
    if len(found) != 1:
        return None
    config = found[0]
    config["run_dir"] = "run"
    for section in config.values():
        if isinstance(section, dict) and "model" in section:
            section.pop("weights", None)
            section["model"] = "handcrafted"
    if "predict" in config:
        config["predict"] = {**config["predict"], "run": "project/runs/abmil"}
    if config.get("export", {}).get("run"):
        config["export"] = {**config["export"], "run": "abmil"}
    return config


def mil_yaml(text: str) -> dict | None:
    """The README's MIL run YAML (the block with a ``data`` section), as written."""
    found = [block for block in readme_yaml(text) if isinstance(block, dict) and "data" in block]
    return found[0] if len(found) == 1 else None


@pytest.fixture(scope="module")
def sfc_env(ray_session) -> dict[str, str]:
    """The environment of every ``sfc``: Ray commands join the test session's Ray."""
    address = ray_session.get_runtime_context().gcs_address
    return {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, slides_dir, sfc_env) -> Path:
    """A user's folder: slides, a labelled manifest, a project tiled, embedded, segmented
    and with the MIL run ``abmil``; made with ``sfc`` itself."""
    assert SFC is not None, f"no sfc script beside {sys.executable}"
    root = tmp_path_factory.mktemp("user")
    (root / "slides").mkdir()
    svs = slides_dir / "CMU-1-Small-Region.svs"
    for slide_id in ("CMU-1", "S1", "S2", "S3"):
        shutil.copyfile(svs, root / "slides" / f"{slide_id}.svs")
    shutil.copyfile(svs, root / "slide.svs")
    shutil.copyfile(slides_dir / "boxes.tiff", root / "scan.tiff")  # no calibration
    (root / "nuclei").symlink_to(slides_dir.parent / "nuclei")  # annotated nuclei tiles
    steps = [
        "sfc cohort from-folder slides/ --out manifest.csv",
        "sfc tile manifest.csv --out project --target-mpp 0.5 --tile-px 256 --no-progress",
        "sfc embed project --model handcrafted --no-progress",
        "sfc segment project --no-progress",
        "sfc mil train abmil.yaml",
        "sfc cells train nuclei --out nuclei.safetensors --steps 2 --batch-size 2 --crop-px 128 "
        "--no-progress",
    ]
    for step in steps:
        if step.startswith("sfc tile"):  # the user adds the labels to the manifest
            manifest = pd.read_csv(root / "manifest.csv")
            manifest["label"] = ["tumour", "normal"] * (len(manifest) // 2)
            manifest.to_csv(root / "manifest.csv", index=False)
        check(sfc(step, root, sfc_env), step)
        if step.startswith("sfc segment"):
            (root / "abmil.yaml").write_text(yaml.safe_dump(MIL_RUN))
    pipeline = pipeline_yaml(README.read_text())
    if pipeline is not None:
        (root / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    run = mil_yaml(README.read_text())
    if run is not None:
        (root / "tumour-abmil.yaml").write_text(yaml.safe_dump(run))
    return root


def run_server(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start a serving command, fetch the URL it prints, and stop it."""
    argv = shlex.split(command)
    process = subprocess.Popen(
        [SFC, *argv[1:]], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        url = None
        for line in process.stdout:
            found = re.search(r"http://127\.0\.0\.1:\d+/", line)
            if found:
                url = found.group(0)
                break
        assert url, f"$ {command} printed no URL; stderr:\n{process.stderr.read()}"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("command", readme_commands(README.read_text()))
def test_readme_command_runs(command, prepared, sfc_env, tmp_path):
    if command in ELSEWHERE:
        assert (REPO_ROOT / "tests" / ELSEWHERE[command]).is_file()
        pytest.skip(f"needs a Ray cluster: run in {ELSEWHERE[command]}")
    assert command in COMMANDS, (
        f"README command {command!r} is not in COMMANDS of {Path(__file__).name}: "
        "add it to the table (with the command to run here)"
    )
    run = command if COMMANDS[command] == AS_WRITTEN else COMMANDS[command]
    cwd = tmp_path / "user"
    shutil.copytree(prepared, cwd, symlinks=True)
    if command in SERVERS:
        run_server(run, cwd, sfc_env)
        return
    check(sfc(run, cwd, sfc_env), run)
    # What a command writes lands where the user asked, relative to the user's folder
    # (not to where a Ray worker happens to run).
    argv = shlex.split(run)
    for flag in ("--out", "--export-h5"):
        if flag in argv:
            out = cwd / argv[argv.index(flag) + 1]
            assert out.is_file() or any(out.glob("*")), f"{run}: nothing written to {out}"


def test_the_tables_name_only_readme_commands_and_cluster_ones_go_elsewhere():
    written = set(readme_commands(README.read_text()))
    assert written, "no sfc command found in README.md's bash blocks"
    stale = sorted((set(COMMANDS) | set(ELSEWHERE)) - written)
    assert not stale, f"no longer in the README, remove from the table: {stale}"
    assert all("http://HEAD:8265" in command for command in ELSEWHERE)
    assert SERVERS.issubset(COMMANDS)


def test_readme_commands_are_read_from_bash_blocks_only():
    text = (
        "```bash\nsfc a x  # note\nsfc b \\\n    --c d\nmake test\n```\n"
        "```python\nsfc = 1\n```\n```bash\n  sfc  e\n```\n"
    )
    assert readme_commands(text) == ["sfc a x", "sfc b --c d", "sfc e"]


#: A user's mistakes: (command, what the error line says).
MISTAKES = [
    ("sfc tile missing.csv --out x", "manifest not found: missing.csv"),
    ("sfc synth dir/that/does/not/exist/a.svs", "folder dir/that/does/not/exist does not exist"),
    ("sfc export . --out one.geojson", "names one file"),
    ("sfc export nothing --out x.geojson", "no slide store found at nothing"),
    ("sfc cohort validate missing.csv", "manifest not found: missing.csv"),
    ("sfc info missing.svs", "slide file not found: missing.svs"),
    ("sfc tiles info missing.zarr", "slide store not found: missing.zarr"),
    ("sfc view nothing", "nothing to view at nothing"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("command", "says"), MISTAKES)
def test_a_user_mistake_is_one_error_line_and_a_hint(command, says, tmp_path):
    cwd = tmp_path
    make_store(cwd, "S1")  # a project, for the command that exports one to a file
    result = sfc(command, cwd, dict(os.environ))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert lines[1].startswith("hint: ")
    assert not (cwd / "one.geojson").exists() and not (cwd / "x").exists()
