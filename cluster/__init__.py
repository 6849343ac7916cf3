"""Cluster layer: the per-cohort pipeline (tile → embed) on Ray, locally or on a cluster.

Python API::

    import cluster
    config = cluster.PipelineConfig.from_yaml("pipeline.yaml")
    report = cluster.run("manifest.csv", config)          # local Ray (or $RAY_ADDRESS)
    job = cluster.submit("manifest.csv", config=config, address="http://HEAD:8265")
    cluster.wait(job, address="http://HEAD:8265")

Stands on every stage (``tiling``, ``embedders``) and on :mod:`slideflow_core`.
"""

from __future__ import annotations

from cluster.config import EmbedStageConfig, PipelineConfig, PipelineConfigError, load_config
from cluster.pipeline import run
from cluster.report import PipelineReport, StageSummary
from cluster.rundir import RunDirectory
from cluster.stages import STAGES, create_stage, list_stages
from cluster.state import SlideOutcome, SlideStates
from cluster.submit import JobState, SubmitError, cancel, logs, status, submit, wait

__all__ = [
    "STAGES",
    "EmbedStageConfig",
    "JobState",
    "PipelineConfig",
    "PipelineConfigError",
    "PipelineReport",
    "RunDirectory",
    "SlideOutcome",
    "SlideStates",
    "StageSummary",
    "SubmitError",
    "cancel",
    "create_stage",
    "list_stages",
    "load_config",
    "logs",
    "run",
    "status",
    "submit",
    "wait",
]
