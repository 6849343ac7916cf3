"""Running the per-cohort pipeline (any registered stages, in order) on Ray, resumably.

:func:`run` is the whole pipeline in one call, the same on a laptop (a local
Ray instance is started) and inside a Ray job on a cluster (it joins the job's
cluster). Slides go through the stages in waves; after every stage of every
wave the per-slide states are written to the run directory, and at the end a
report (counts, failures, throughput, time per stage). A rerun resumes: each
stage skips slides whose part is already complete with the same
configuration, and with an object-storage run directory, slides whose stores
are complete there are not even downloaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from cluster.config import PipelineConfig, load_config
from cluster.report import PipelineReport, StageSummary
from cluster.rundir import PIPELINE_DIR, RunDirectory
from cluster.state import SlideStates
from slideflow_core.cohort import Cohort
from slideflow_core.ray_runtime import ensure_ray, start_ray
from slideflow_core.stages import CohortReport, SlideOutcome, Stage, create_stage, run_cohort

log = logging.getLogger(__name__)

#: Slides per wave when the run directory is on object storage and none is set.
REMOTE_BATCH_SLIDES = 64
UPLOAD = "upload"


def _waves(slide_ids: tuple[str, ...], size: int | None) -> Iterator[list[str]]:
    size = size or len(slide_ids) or 1
    for start in range(0, len(slide_ids), size):
        yield list(slide_ids[start : start + size])


def _finished_remotely(rundir: RunDirectory, stages: list[Stage], slide_id: str) -> bool:
    url = rundir.store_url(slide_id)
    return all(stage.done(url) for stage in stages)


def _save(rundir: RunDirectory, name: str, text: str) -> None:
    """Write a progress file of the run; a failed write (a full disk) is logged, not raised.

    The stores' own markers are what resume trusts, so losing this record costs only
    the report, never a slide.
    """
    try:
        rundir.write(name, text)
    except OSError as exc:
        log.error("could not write %s in %s: %s", name, rundir.url, exc)


def _outcomes(stage: str, results: list[SlideOutcome], seconds: float = 0.0) -> CohortReport:
    return CohortReport(stage, stage, tuple(results), seconds, project="")


def _blocked(stage: str, slide_ids: list[str]) -> CohortReport:
    """``blocked`` outcomes for slides an earlier stage failed."""
    return _outcomes(stage, [SlideOutcome(s, "blocked") for s in slide_ids])


def _upload(rundir: RunDirectory, slide_ids: list[str], keep_local: bool) -> CohortReport:
    started = time.time()
    results = []
    for slide_id in slide_ids:
        began = time.time()
        try:
            rundir.push(slide_id, keep_local=keep_local)
            results.append(SlideOutcome(slide_id, "done", seconds=time.time() - began))
        except Exception as exc:  # one failed upload must not stop the others
            results.append(SlideOutcome.failed(slide_id, exc, seconds=time.time() - began))
    rundir.push_outputs()
    return _outcomes(UPLOAD, results, time.time() - started)


def run(
    manifest: Cohort | str | os.PathLike[str],
    config: PipelineConfig | dict[str, Any] | str | os.PathLike[str],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: bool = True,
    run_dir: str | os.PathLike[str] | None = None,
) -> PipelineReport:
    """Run the pipeline's stages over a cohort on Ray and write the run directory.

    Parameters
    ----------
    manifest
        The cohort: a :class:`~slideflow_core.cohort.Cohort` or a manifest path.
        Slide paths may be local (visible to every worker) or ``s3://`` URLs.
    config
        A :class:`PipelineConfig`, its mapping, or a YAML file path.
    address
        Ray cluster to join; default ``$RAY_ADDRESS`` (set inside a Ray job),
        else a local Ray instance is started.
    num_cpus
        Cores of a local Ray instance (default: all).
    progress
        Show the stages' progress bars.
    run_dir
        Override of the config's ``run_dir`` (required when the config has none).

    Returns
    -------
    PipelineReport
        Per-stage totals and per-slide states; also written to
        ``<run_dir>/pipeline/report.json`` beside ``pipeline/state.json`` and
        ``pipeline/config.yaml``, the resolved config.
    """
    started = time.time()
    config = load_config(config)
    if run_dir is not None:
        config = config.with_run_dir(run_dir)
    config.require_run_dir()
    cohort = manifest if isinstance(manifest, Cohort) else Cohort.from_manifest(manifest)
    stages = [create_stage(name, config.stage_config(name)) for name in config.stages]
    rundir = RunDirectory.open(str(config.run_dir), work_dir=config.work_dir)
    start_ray(address, num_cpus=num_cpus)  # goes on while the stages check what they need
    for stage in stages:
        stage.prepare(rundir.layout)  # every stage fails fast, before any slide is touched
    names = [s.name for s in stages] + ([UPLOAD] if rundir.remote else [])
    rundir.write(f"{PIPELINE_DIR}/config.yaml", config.to_yaml())
    cohort.write(rundir.layout.manifest)
    rundir.write("manifest.csv", rundir.layout.manifest.read_text())
    states = SlideStates.from_json(
        rundir.read(f"{PIPELINE_DIR}/state.json"), cohort.slide_ids, names
    )
    ensure_ray(address, num_cpus=num_cpus)  # joins a cluster only now, after the checks' imports
    totals = {name: StageSummary(name) for name in names}
    batch = config.batch_slides or (REMOTE_BATCH_SLIDES if rundir.remote else None)

    def record(outcome: CohortReport) -> None:
        states.record(outcome.stage, outcome.results)
        totals[outcome.stage] = totals[outcome.stage].add(outcome)

    for wave in _waves(cohort.slide_ids, batch):
        todo = wave
        if rundir.remote:
            finished = set()
            if not config.overwrite:
                finished = {s for s in wave if _finished_remotely(rundir, stages, s)}
            for name in names:
                record(_outcomes(name, [SlideOutcome(s, "skipped") for s in wave if s in finished]))
            todo = [s for s in wave if s not in finished]
            for slide_id in todo:
                rundir.pull(slide_id)
        stopped: list[str] = []  # slides of this wave that failed a stage
        for stage in stages:
            outcome = (
                run_cohort(
                    stage,
                    rundir.layout.root,
                    cohort.subset(todo),
                    overwrite=config.overwrite,
                    progress=progress,
                )
                if todo
                else _outcomes(stage.name, [])
            )
            record(outcome)
            record(_blocked(stage.name, stopped))
            stopped += [r.slide_id for r in outcome.results if r.status == "failed"]
            todo = outcome.succeeded
            _save(rundir, f"{PIPELINE_DIR}/state.json", states.to_json())
            log.info("stage %s: %s", stage.name, totals[stage.name])
        if rundir.remote:
            record(_upload(rundir, todo, config.keep_local))
            record(_blocked(UPLOAD, stopped))
            _save(rundir, f"{PIPELINE_DIR}/state.json", states.to_json())

    report = PipelineReport(
        run_dir=rundir.url,
        stages=tuple(totals[name] for name in names),
        states=states,
        seconds=time.time() - started,
    )
    _save(rundir, f"{PIPELINE_DIR}/report.json", report.to_json())
    return report
