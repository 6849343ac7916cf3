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
import os
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cluster.config import PipelineConfig, load_config
from slideflow_core.cohort import Cohort
from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError

#: Packages the job needs on the cluster, by stage (``cluster`` always).
_PACKAGES = {"tile": ("slideflow_core", "tiling"), "embed": ("embedders",)}
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
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


def _package_dirs(config: PipelineConfig) -> list[str]:
    names = ["cluster", *(p for stage in config.stages for p in _PACKAGES[stage])]
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

    Raises
    ------
    SubmitError
        If the run directory is relative, a variable is missing, or the Jobs
        API is unreachable.
    """
    config = load_config(config)
    if run_dir is not None:
        config = config.with_run_dir(run_dir)
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
    with tempfile.TemporaryDirectory(prefix="sfc-job-") as staging:
        cohort.write(Path(staging) / "manifest.csv")  # absolute paths and URLs
        (Path(staging) / "pipeline.yaml").write_text(config.to_yaml())
        environment: dict[str, Any] = {
            "working_dir": staging,
            "env_vars": {"RAY_AUTH_MODE": "disabled", **_env_vars(env)},
            **(runtime_env or {}),
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
