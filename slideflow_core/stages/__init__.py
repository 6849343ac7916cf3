"""The stage model: every per-slide step is a :class:`Stage`, run by :func:`run_cohort`.

A stage says what it does to one slide (``plan`` → units → ``run`` → ``commit``)
and which store part it writes; the runner owns everything else. Stages are
found by name through the ``sfc.stages`` entry points (:func:`create_stage`).
"""

from slideflow_core.stages.executors import process_slide, run_plan, run_slide
from slideflow_core.stages.outcome import STATUSES, CohortReport, SlideOutcome
from slideflow_core.stages.protocol import (
    EXECUTORS,
    ActorPlan,
    Placement,
    Plan,
    SlideRef,
    Stage,
    StageDefaults,
    Unit,
)
from slideflow_core.stages.registry import (
    StageConfigError,
    config_from,
    create_stage,
    list_stages,
    stage_config,
    stages,
)
from slideflow_core.stages.runner import StageError, resolve_slides, run_cohort

__all__ = [
    "EXECUTORS",
    "STATUSES",
    "ActorPlan",
    "CohortReport",
    "Placement",
    "Plan",
    "SlideOutcome",
    "SlideRef",
    "Stage",
    "StageConfigError",
    "StageDefaults",
    "StageError",
    "Unit",
    "config_from",
    "create_stage",
    "list_stages",
    "process_slide",
    "resolve_slides",
    "run_cohort",
    "run_plan",
    "run_slide",
    "stage_config",
    "stages",
]
