"""``sfc submit`` sends a cohort through every stage on a real Ray cluster (Jobs API).

A head started with ``ray start --head`` and one worker node with ``ray start
--address`` (each with its own ports and temp dir, the dashboard on 127.0.0.1),
then ``sfc submit`` of tile → embed → segment → predict → export (the package is
uploaded as ``py_modules``), ``sfc cancel`` mid-run, a resubmission, ``sfc status``
and ``sfc logs``: every slide ends with features, cells, attention from a trained
run, a prediction row and a QuPath GeoJSON, and nothing committed before the
cancel is redone. A head whose ``python`` lacks our packages gets one clear error
before anything is uploaded. The ``ray start`` processes run with ``--block`` in
their own process groups and are ended by their ids: ``ray stop`` would stop every
Ray instance on the machine.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cluster_fixtures import TILING, free_port

import cluster
from slideflow_core.store import read_store_attrs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _ray_start(args: list[str], temp_dir: str, *, project_path: bool = True) -> subprocess.Popen:
    """``ray start --block`` from this environment's ``ray`` script.

    With ``project_path=False`` this environment's folder is left off the PATH, as
    on a head started by hand from another shell: jobs there run another ``python``.
    """
    ports = {
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN]
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), *path] if project_path else path),
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("VIRTUAL_ENV", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *[f"{k}={v}" for k, v in ports.items()], *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    """End a ``ray start --block`` and the Ray processes it started (its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait_for_nodes(dashboard: str, count: int, timeout_s: float) -> None:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            alive = [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]
            if len(alive) >= count:
                return
        except Exception:  # the dashboard is still starting
            pass
        time.sleep(1)
    raise TimeoutError(f"fewer than {count} Ray nodes came up at {dashboard}")


@contextlib.contextmanager
def _cluster(nodes: int, *, project_path: bool = True) -> Iterator[str]:
    """A Ray cluster of ``nodes`` nodes on this machine; yields the dashboard address."""
    temp_dir = tempfile.mkdtemp(prefix="sfc-ray-", dir="/tmp")  # short: socket paths
    port, dashboard_port = free_port(), free_port()
    head = _ray_start(
        ["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         f"--ray-client-server-port={free_port()}"],
        temp_dir,
        project_path=project_path,
    )  # fmt: skip
    processes = [head]
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_nodes(dashboard, 1, 120)
        from ray.util.state import list_nodes

        head_ip = list_nodes(address=dashboard)[0].node_ip
        for _ in range(nodes - 1):
            processes.append(_ray_start([f"--address={head_ip}:{port}", "--num-cpus=2"], temp_dir))
        _wait_for_nodes(dashboard, nodes, 120)
        yield dashboard
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A two-node Ray cluster on this machine; yields the dashboard address."""
    with _cluster(2) as dashboard:
        yield dashboard


def test_submit_to_a_head_without_the_project_environment_names_what_is_missing(cmu_svs, tmp_path):
    """A head started from a shell whose ``python`` lacks our packages: one clear error,
    before anything is uploaded, naming the missing modules and the fix."""
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame([{"slide_id": "CMU-1", "path": str(cmu_svs)}]).to_csv(manifest, index=False)
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nstages: [tile]\n")
    with _cluster(1, project_path=False) as dashboard:
        submitted = subprocess.run(
            [str(BIN / "sfc"), "submit", str(manifest), "--config", str(config),
             "--address", dashboard],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(dashboard).list_jobs()
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    assert "Traceback" not in submitted.stderr
    errors = [line for line in submitted.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, submitted.stderr
    assert "cv2 (pip: opencv-python-headless)" in errors[0]
    assert "hint:" in submitted.stderr and "--pip" in submitted.stderr
    assert all(job.submission_id.startswith("sfc-probe-") for job in jobs)  # nothing else ran
    assert not (tmp_path / "run").exists()


def _train_run(root: Path, slide: Path) -> Path:
    """A trained ABMIL run over handcrafted features (in this process, no Ray)."""
    import mil
    from embedders import embed_cohort
    from slideflow_core.cohort import Cohort
    from tiling import tile_cohort

    rows = [{"slide_id": f"t{i}", "path": str(slide), "label": "ab"[i % 2]} for i in range(4)]
    root.mkdir(parents=True)
    manifest = root / "train.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    tile_cohort(manifest, root, TILING, executor="local", progress=False)
    embed_cohort(root, "handcrafted", executor="local", progress=False)
    experiment = mil.Experiment(
        Cohort.from_manifest(manifest), project=root, features="handcrafted", label="label",
        model="abmil", splits=mil.KFold(k=2, seed=0), name="abmil", heatmaps=0,
        train=mil.TrainConfig(epochs=3, batch_size=2, patience=None),
    )  # fmt: skip
    return experiment.run().run_dir


def _sfc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "sfc"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _committed(store: Path) -> dict[str, tuple[int, str]]:
    """Complete parts of a store: the root metadata's mtime and each part's commit time."""
    if not (store / "zarr.json").is_file():
        return {}
    mtime = (store / "zarr.json").stat().st_mtime_ns
    parts = read_store_attrs(store)["parts"]
    return {p: (mtime, str(info.get("time"))) for p, info in parts.items() if info.get("complete")}


def test_sfc_submit_runs_every_stage_and_a_cancelled_job_resubmitted_finishes_each_slide_once(
    ray_head, synthetic_slide, cmu_svs, tmp_path
):
    """tile → embed → segment → predict → export through the Jobs API on two nodes; the
    first job is cancelled (its driver killed) mid-run and the resubmitted one completes
    every slide, redoing nothing that was committed."""
    from cluster.submit import check_cluster

    modules = {"numpy": "numpy", "cv2": "opencv-python-headless", "sfc_not_a_module": "nope"}
    assert check_cluster(ray_head, modules) == ["sfc_not_a_module"]

    slide, _ = synthetic_slide
    run_path = _train_run(tmp_path / "train", slide)
    manifest = tmp_path / "manifest.csv"
    rows = [
        {"slide_id": "synth-1", "path": str(slide), "label": "a"},
        {"slide_id": "synth-2", "path": str(slide), "label": "b"},
        {"slide_id": "CMU-1", "path": str(cmu_svs), "label": "a"},
    ]
    ids = [r["slide_id"] for r in rows]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    run_dir = tmp_path / "run"
    config = cluster.PipelineConfig(
        run_dir=str(run_dir),
        stages=("tile", "embed", "segment", "predict", "export"),
        settings={
            "tile": TILING,
            "embed": {"model": "handcrafted", "num_actors": 2},
            "segment": {"segmenter": "classical", "tile_px": 512},
            "predict": {"run": str(run_path)},
            "export": {"run": "abmil"},
        },
    )
    config_path = tmp_path / "all-stages.yaml"
    config_path.write_text(config.to_yaml())
    submit = ["submit", str(manifest), "--config", str(config_path), "--address", ray_head,
              "--env", "SFC_ZARR_PIPELINE=auto"]  # fmt: skip

    first = _sfc(*submit)
    assert first.returncode == 0, first.stderr
    first_id = first.stdout.strip().splitlines()[-1]
    tile_status = run_dir / "status" / "tile"
    deadline = time.monotonic() + 300
    while not (tile_status.is_dir() and any(tile_status.glob("*.json"))):
        assert time.monotonic() < deadline, cluster.logs(first_id, address=ray_head)[-3000:]
        state = cluster.status(first_id, address=ray_head)
        assert not state.finished, (
            f"the job ended early: {cluster.logs(first_id, address=ray_head)[-3000:]}"
        )
        time.sleep(0.2)
    cancelled = _sfc("cancel", first_id, "--address", ray_head)
    assert cancelled.returncode == 0 and "stopping" in cancelled.stdout, cancelled.stderr
    assert cluster.wait(first_id, address=ray_head, timeout_s=120).status == "STOPPED"
    time.sleep(2)  # the job's workers are stopped with it
    before = {sid: _committed(run_dir / "stores" / f"{sid}.zarr") for sid in ids}
    assert not os.path.exists(run_dir / "predictions"), "the first job got past tiling"

    second = _sfc(*submit)
    assert second.returncode == 0, second.stderr
    job_id = second.stdout.strip().splitlines()[-1]
    state = cluster.wait(job_id, address=ray_head, timeout_s=900)
    logs = cluster.logs(job_id, address=ray_head)
    (tmp_path / "job.log").write_text(logs)
    assert state.status == "SUCCEEDED", f"{state}\n{logs[-3000:]}"
    status = _sfc("status", job_id, "--address", ray_head)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    printed = _sfc("logs", job_id, "--address", ray_head)
    assert "export" in printed.stdout and ": ok in" in printed.stdout  # the report table

    report = json.loads((run_dir / "pipeline" / "report.json").read_text())
    assert report["ok"], report["failures"]
    by_stage = {s["stage"]: s for s in report["stages"]}
    assert list(by_stage) == ["tile", "embed", "segment", "predict", "export"]
    assert all(by_stage[s]["done"] + by_stage[s]["skipped"] == 3 for s in by_stage)
    for sid in ids:
        store = run_dir / "stores" / f"{sid}.zarr"
        parts = read_store_attrs(store)["parts"]
        for part in ("tiling", "features/handcrafted", "cells/classical", "attention/abmil"):
            assert parts[part]["complete"], (sid, part)
        # Exactly once: what the cancelled job committed was kept, not redone.
        for part, (_, committed) in before[sid].items():
            assert str(parts[part].get("time")) == committed, f"{sid} {part} was redone"
        with gzip.open(run_dir / "exports" / f"{sid}.geojson.gz", "rt") as f:
            collection = json.load(f)
        kinds = {feature["properties"]["objectType"] for feature in collection["features"]}
        # Tissue (annotation), tiles with scores, and nuclei (bare nuclei are detections).
        assert {"annotation", "tile", "detection"} <= kinds, (sid, kinds)
        scored = [
            f for f in collection["features"]
            if "attention" in f["properties"].get("measurements", {})
        ]  # fmt: skip
        assert scored, "tiles carry no attention score"
        assert (run_dir / "exports" / f"{sid}.heatmap.png").stat().st_size > 0
    assert sum(len(b) for b in before.values()) >= 1  # the cancel came after a commit
    predictions = pd.read_csv(run_dir / "predictions" / "abmil.csv")
    assert sorted(predictions["slide_id"]) == sorted(ids)  # one row per slide
    assert predictions.filter(like="prob").notna().all().all()
    leftovers = [p.name for p in (run_dir / "stores").iterdir() if p.name.endswith(".partial")]
    assert not leftovers
    assert cluster.PipelineConfig.from_yaml(run_dir / "pipeline" / "config.yaml") == config
    assert not cluster.cancel(job_id, address=ray_head)  # finished jobs are not running
