"""Per-slide states of a pipeline run: what each stage did to each slide.

The states are the run directory's manifest of progress
(``pipeline/state.json``): rewritten after every stage of every wave, so a
killed run leaves an accurate record of what had finished, and read back by
the next run, which keeps the states of slides it does not touch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from slideflow_core.stages import SlideOutcome


class SlideStates:
    """Slide id → stage → :class:`SlideOutcome`, in cohort order.

    Parameters
    ----------
    slide_ids
        The cohort's slides (their order is kept).
    stages
        Stage names, in run order (columns of :meth:`to_frame`).
    """

    def __init__(self, slide_ids: Iterable[str], stages: Iterable[str]) -> None:
        self.stages = tuple(stages)
        self._states: dict[str, dict[str, SlideOutcome]] = {sid: {} for sid in slide_ids}

    def record(self, stage: str, outcomes: Iterable[SlideOutcome]) -> None:
        """Set the state of each slide in ``outcomes`` for ``stage``."""
        for outcome in outcomes:
            self._states.setdefault(outcome.slide_id, {})[stage] = outcome

    def get(self, slide_id: str, stage: str) -> SlideOutcome | None:
        """The state of one slide for one stage, if recorded."""
        return self._states.get(slide_id, {}).get(stage)

    def outcomes(self, stage: str) -> list[SlideOutcome]:
        """Every recorded outcome of ``stage``, in cohort order."""
        return [s[stage] for s in self._states.values() if stage in s]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "stages": list(self.stages),
            "slides": {
                sid: {stage: o.to_dict() for stage, o in states.items()}
                for sid, states in self._states.items()
            },
        }

    def to_json(self) -> str:
        """The states as JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(
        cls, text: str | None, slide_ids: Iterable[str], stages: Iterable[str]
    ) -> SlideStates:
        """States for this run, keeping what a previous run (``text``) recorded."""
        states = cls(slide_ids, stages)
        if text:
            for by_stage in json.loads(text).get("slides", {}).values():
                for stage, outcome in by_stage.items():
                    states.record(stage, [SlideOutcome.from_dict(outcome)])
        return states

    def to_frame(self) -> pd.DataFrame:
        """One row per slide, one status column per stage (``-`` when never run)."""
        rows = []
        for sid, states in self._states.items():
            row = {"slide_id": sid}
            for stage in self.stages:
                outcome = states.get(stage)
                row[stage] = outcome.status if outcome else "-"
            rows.append(row)
        return pd.DataFrame(rows, columns=["slide_id", *self.stages])
