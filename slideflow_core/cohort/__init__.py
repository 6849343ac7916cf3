"""Cohorts: manifests of slides, their validation, and where outputs live.

A cohort is read from a manifest (CSV, TSV, Parquet or a DataFrame) with the
columns ``slide_id`` and ``path`` (required), ``patient_id`` and ``mpp``
(optional) and any label columns, or built from a folder of slide files.
:meth:`Cohort.validate` reports every bad row at once, with line numbers.
:class:`ProjectLayout` names the files computed for each slide.
"""

from __future__ import annotations

from slideflow_core.cohort.cohort import Cohort
from slideflow_core.cohort.ids import MAX_ID_BYTES, SLIDE_EXTENSIONS, safe_slide_id
from slideflow_core.cohort.layout import ProjectLayout
from slideflow_core.cohort.manifest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from slideflow_core.cohort.records import Problem, SlideRecord, ValidationReport

__all__ = [
    "MAX_ID_BYTES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "SLIDE_EXTENSIONS",
    "Cohort",
    "Problem",
    "ProjectLayout",
    "SlideRecord",
    "ValidationReport",
    "safe_slide_id",
]
