"""Cluster layer: the per-cohort pipeline (any registered stages) on Ray, locally or on a cluster.

Python API::

    import cluster
    config = cluster.PipelineConfig.from_yaml("pipeline.yaml")
    report = cluster.run("manifest.csv", config)          # local Ray (or $RAY_ADDRESS)
    job = cluster.submit("manifest.csv", config=config, address="http://HEAD:8265")
    cluster.wait(job, address="http://HEAD:8265")

Stages are found through the ``sfc.stages`` entry points (:mod:`slideflow_core.stages`).
"""

from __future__ import annotations

from cluster.config import PipelineConfig, PipelineConfigError, load_config
from cluster.pipeline import run
from cluster.report import PipelineReport, StageSummary
from cluster.rundir import RunDirectory
from cluster.state import SlideStates
from cluster.submit import JobState, SubmitError, cancel, logs, status, submit, wait

__all__ = [
    "JobState",
    "PipelineConfig",
    "PipelineConfigError",
    "PipelineReport",
    "RunDirectory",
    "SlideStates",
    "StageSummary",
    "SubmitError",
    "cancel",
    "load_config",
    "logs",
    "run",
    "status",
    "submit",
    "wait",
]
