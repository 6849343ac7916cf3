"""Submitting the pipeline to a Ray cluster through the Ray Jobs API.

:func:`submit` sends the resolved manifest and pipeline config as the job's
working directory, the package's source as ``py_modules`` (or relies on the
package being installed in the cluster's image), and the environment variables
you name (object-storage credentials, endpoints); the job runs
``python -m cluster run manifest.csv --config pipeline.yaml`` on the cluster,
which joins the cluster and runs :func:`cluster.run`. :func:`status`,
:func:`wait`, :func:`logs` and :func:`cancel` follow a job by its id.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from cluster.config import PipelineConfig, load_config
from slideflow_core.cohort import Cohort
from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError
from slideflow_core.stages.registry import ENTRY_POINT_GROUP

_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: Modules the job imports on the cluster (import name → pip name): the core and cluster
#: layers always, each stage's own beside them, s3fs for object-storage run directories.
CORE_MODULES = {
    "numpy": "numpy",
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "openslide": "openslide-python",
    "tiffslide": "tiffslide",
    "imagecodecs": "imagecodecs",
    "shapely": "shapely",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "zarr": "zarr",
    "tqdm": "tqdm",
    "yaml": "pyyaml",
    "fsspec": "fsspec",
}
STAGE_MODULES = {
    "embed": {"torch": "torch", "timm": "timm", "safetensors": "safetensors"},
    "segment": {"skimage": "scikit-image", "scipy": "scipy"},
    "predict": {"torch": "torch", "safetensors": "safetensors"},
}
#: How long the environment check may wait for its probe job.
PROBE_TIMEOUT_S = 180.0
_PROBE = (
    "import importlib.util as u, json, sys; m = json.loads(sys.argv[1]); "
    "print('SFC-PROBE ' + json.dumps({'python': sys.version.split()[0], "
    "'missing': [n for n in m if u.find_spec(n) is None]}))"
)
Package = Literal["upload", "installed"]


class SubmitError(SlideflowError):
    """A job could not be submitted, found or followed."""


@dataclass(frozen=True)
class JobState:
    """Where a submitted job is."""

    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str = ""
    entrypoint: str = ""
    start_time: float | None = None
    end_time: float | None = None

    @property
    def finished(self) -> bool:
        """Whether the job has reached a final state."""
        return self.status in _TERMINAL

    def __str__(self) -> str:
        return f"{self.job_id}: {self.status}" + (f" ({self.message})" if self.message else "")


def _client(address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise SubmitError(
            f"cannot reach the Ray Jobs API at {address or '$RAY_ADDRESS'}: {exc}",
            hint="give the head's dashboard address, e.g. --address http://HEAD:8265",
        ) from exc


def _stage_packages(stages: Sequence[str]) -> list[str]:
    """Top-level packages holding these stages (from their ``sfc.stages`` entry points)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return [found[s].split(":")[0].split(".")[0] for s in stages if s in found]


def required_modules(config: PipelineConfig) -> dict[str, str]:
    """Modules (import name → pip name) the pipeline's job imports on the cluster."""
    needed = dict(CORE_MODULES)
    for stage in config.stages:
        needed.update(STAGE_MODULES.get(stage, {}))
    if config.remote and str(config.run_dir).startswith("s3://"):
        needed["s3fs"] = "s3fs"
    return needed


def check_cluster(
    address: str | None,
    modules: Mapping[str, str],
    *,
    runtime_env: dict[str, Any] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> list[str]:
    """Import names of ``modules`` that the cluster's Python lacks (a small probe job).

    The probe runs as a Ray job with the same ``runtime_env`` fields (``pip``,
    ``container``, env vars) the real job would get, so it sees what the job sees.

    Raises
    ------
    SubmitError
        If the probe job cannot run or does not answer within ``timeout_s``.
    """
    client = _client(address)
    entrypoint = f"python -c {shlex.quote(_PROBE)} {shlex.quote(json.dumps(list(modules)))}"
    probe_id = f"sfc-probe-{uuid.uuid4().hex[:8]}"
    try:
        client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env or None, submission_id=probe_id
        )
    except RuntimeError as exc:
        raise SubmitError(f"the Ray Jobs API refused the environment probe: {exc}") from exc
    state = wait(probe_id, address=address, timeout_s=timeout_s, poll_s=0.5)
    text = logs(probe_id, address=address)
    answer = next((line for line in text.splitlines() if line.startswith("SFC-PROBE ")), None)
    if answer is None:
        if not state.finished:
            cancel(probe_id, address=address)
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise SubmitError(
            f"could not check the cluster's Python environment (probe job {state}): {tail}",
            hint="check that `python` on the Ray head works; --skip-check submits anyway",
        )
    return list(json.loads(answer.removeprefix("SFC-PROBE "))["missing"])


def _package_dirs(config: PipelineConfig) -> list[str]:
    names = ["slideflow_core", "cluster", *_stage_packages(config.stages)]
    dirs = []
    for name in dict.fromkeys(names):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SubmitError(f"cannot find the {name} package to upload")
        dirs.append(str(Path(next(iter(spec.submodule_search_locations)))))
    return dirs


def _env_vars(env: Mapping[str, str | None] | None) -> dict[str, str]:
    """Named variables: a ``None`` value is copied from this process's environment."""
    out = {}
    for name, value in (env or {}).items():
        if value is None:
            if name not in os.environ:
                raise SubmitError(
                    f"environment variable {name} is not set here",
                    hint=f"set it, or pass {name}=VALUE",
                )
            value = os.environ[name]
        out[name] = value
    return out


def submit(
    manifest: Cohort | str | os.PathLike[str],
    *,
    config: PipelineConfig | dict[str, Any] | str | os.PathLike[str],
    address: str | None = None,
    run_dir: str | None = None,
    env: Mapping[str, str | None] | None = None,
    package: Package = "upload",
    runtime_env: dict[str, Any] | None = None,
    job_id: str | None = None,
    check: bool = True,
    pip: bool = False,
) -> str:
    """Submit the pipeline over a cohort as a Ray job; returns the job id.

    Parameters
    ----------
    manifest
        The cohort (a manifest path or a :class:`~slideflow_core.cohort.Cohort`).
        Its slide paths must be readable on the cluster: ``s3://`` URLs, or
        paths on a filesystem every node mounts.
    config
        The pipeline (object, mapping or YAML path).
    address
        The head's dashboard, ``http://HEAD:8265`` (default ``$RAY_ADDRESS``).
    run_dir
        Override of ``config.run_dir``; it must be absolute or a URL, since the
        job runs elsewhere.
    env
        Environment variables for the job: ``{"NAME": "value"}``, or
        ``{"NAME": None}`` to copy this process's value (credentials, endpoints).
    package
        ``"upload"``: ship this package's source with the job (the cluster needs
        its dependencies, as in ``deploy/Dockerfile``); ``"installed"``: the
        cluster's image already has slideflow-core.
    runtime_env
        More Ray ``runtime_env`` fields (``pip``, ``container``...), merged in.
    job_id
        Submission id (default ``sfc-<random>``).
    check
        Before uploading anything, run a probe job that checks the cluster's
        Python has every module the stages import (:func:`check_cluster`).
    pip
        Install the modules the cluster lacks with the job (``runtime_env`` ``pip``;
        the nodes must reach the package index).

    Raises
    ------
    SubmitError
        If the run directory is relative, a variable is missing, the Jobs API is
        unreachable, or the cluster lacks modules the stages need.
    """
    config = load_config(config)
    if run_dir is not None:
        config = config.with_run_dir(run_dir)
    config.require_run_dir()
    assert config.run_dir is not None
    if not (is_uri(config.run_dir) or os.path.isabs(config.run_dir)):
        raise SubmitError(
            f"run_dir {config.run_dir!r} is relative, but the job runs on the cluster",
            hint="give an absolute path on a filesystem the nodes share, or s3://bucket/prefix",
        )
    if package not in ("upload", "installed"):
        raise SubmitError(f"package must be 'upload' or 'installed', got {package!r}")
    cohort = manifest if isinstance(manifest, Cohort) else Cohort.from_manifest(manifest)
    client = _client(address)
    job_id = job_id or f"sfc-{uuid.uuid4().hex[:12]}"
    variables = {"RAY_AUTH_MODE": "disabled", **_env_vars(env)}
    extra = dict(runtime_env or {})
    if check or pip:
        modules = required_modules(config)
        probe_env = {**extra, "env_vars": variables}
        missing = check_cluster(address, modules, runtime_env=probe_env)
        if missing and pip:
            extra["pip"] = [*extra.get("pip", []), *(modules[m] for m in missing)]
        elif missing:
            names = ", ".join(f"{m} (pip: {modules[m]})" for m in missing)
            raise SubmitError(
                f"the Ray cluster at {address or '$RAY_ADDRESS'} lacks modules the "
                f"{', '.join(config.stages)} stages import: {names}",
                hint="start `ray start` on every node from an environment with "
                "pip install 'slideflow-core[tiling,embed,mil,cells,cluster]' (or the image in "
                "deploy/Dockerfile), or pass --pip to install them with the job",
            )
    with tempfile.TemporaryDirectory(prefix="sfc-job-") as staging:
        cohort.write(Path(staging) / "manifest.csv")  # absolute paths and URLs
        (Path(staging) / "pipeline.yaml").write_text(config.to_yaml())
        environment: dict[str, Any] = {
            "working_dir": staging,
            "env_vars": variables,
            **extra,
        }
        if package == "upload":
            environment["py_modules"] = [*environment.get("py_modules", []), *_package_dirs(config)]
        entrypoint = "python -m cluster run manifest.csv --config pipeline.yaml --no-progress"
        try:
            return client.submit_job(
                entrypoint=entrypoint,
                runtime_env=environment,
                submission_id=job_id,
                metadata={"run_dir": config.run_dir, "slides": str(len(cohort))},
            )
        except RuntimeError as exc:
            raise SubmitError(f"the Ray Jobs API refused job {job_id}: {exc}") from exc


def status(job_id: str, *, address: str | None = None) -> JobState:
    """The state of a submitted job."""
    client = _client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as exc:
        raise SubmitError(f"no job {job_id} at {address or '$RAY_ADDRESS'}: {exc}") from exc
    return JobState(
        job_id=job_id,
        status=str(getattr(info.status, "value", info.status)),
        message=info.message or "",
        entrypoint=info.entrypoint or "",
        start_time=info.start_time / 1000 if info.start_time else None,
        end_time=info.end_time / 1000 if info.end_time else None,
    )


def wait(
    job_id: str,
    *,
    address: str | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
) -> JobState:
    """Poll a job until it finishes (or ``timeout_s`` passes); returns its last state."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        state = status(job_id, address=address)
        if state.finished or (deadline is not None and time.monotonic() > deadline):
            return state
        time.sleep(poll_s)


def logs(job_id: str, *, address: str | None = None) -> str:
    """Everything the job's driver printed so far."""
    try:
        return _client(address).get_job_logs(job_id)
    except RuntimeError as exc:
        raise SubmitError(f"no logs for job {job_id}: {exc}") from exc


def cancel(job_id: str, *, address: str | None = None) -> bool:
    """Stop a job; True when it was running and is being stopped.

    Outputs stay consistent: every per-slide part is committed atomically, so
    resubmitting the same pipeline finishes the rest.
    """
    try:
        return bool(_client(address).stop_job(job_id))
    except RuntimeError as exc:
        raise SubmitError(f"cannot stop job {job_id}: {exc}") from exc
