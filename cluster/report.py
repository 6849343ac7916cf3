"""The final report of a pipeline run: counts, failures, throughput and time per stage."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from cluster.state import SlideStates
from slideflow_core.cohort.ids import printable
from slideflow_core.stages import CohortReport


@dataclass(frozen=True)
class StageSummary:
    """Totals of one stage over a run (all waves)."""

    stage: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    blocked: int = 0
    tiles: int = 0
    seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        """Tiles processed (by ``done`` slides) per second of the stage's wall time."""
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: CohortReport) -> StageSummary:
        """These totals plus one more wave of the stage."""
        counts = {s: getattr(self, s) for s in ("done", "skipped", "failed", "blocked")}
        tiles = self.tiles
        for result in outcome.results:
            counts[result.status] += 1
            tiles += result.n_tiles if result.status == "done" else 0
        return StageSummary(
            self.stage, **counts, tiles=tiles, seconds=self.seconds + outcome.seconds
        )


@dataclass(frozen=True)
class PipelineReport:
    """What a pipeline run did.

    Attributes
    ----------
    run_dir
        The run directory (path or URL).
    stages
        Per-stage totals, in run order (``upload`` last for object storage).
    states
        Per-slide states of every stage.
    seconds
        Wall time of the run, Ray start-up included.
    """

    run_dir: str
    stages: tuple[StageSummary, ...]
    states: SlideStates
    seconds: float

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Every failed slide of this run: stage, slide id, error."""
        return [
            {"stage": stage.stage, "slide_id": o.slide_id, "error": o.error}
            for stage in self.stages
            for o in self.states.outcomes(stage.stage)
            if o.status == "failed"
        ]

    @property
    def ok(self) -> bool:
        """True when no slide failed in any stage."""
        return all(s.failed == 0 for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``pipeline/report.json``)."""
        return {
            "run_dir": self.run_dir,
            "seconds": self.seconds,
            "ok": self.ok,
            "stages": [{**asdict(s), "tiles_per_s": s.tiles_per_s} for s in self.stages],
            "failures": self.failures,
            "slides": self.states.to_dict()["slides"],
        }

    def to_json(self) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=1, default=str)

    def to_frame(self) -> pd.DataFrame:
        """One row per stage: counts, tiles, seconds, tiles/s."""
        rows = [{**asdict(s), "tiles_per_s": round(s.tiles_per_s, 1)} for s in self.stages]
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        table = self.to_frame()
        if len(table):
            table["seconds"] = table["seconds"].map(lambda v: f"{v:.1f}")
        lines = [table.to_string(index=False) if len(table) else "(no stage ran)"]
        lines += [
            f"  {f['stage']} {printable(f['slide_id'])}: {printable(str(f['error']))}"
            for f in self.failures
        ]
        status = "ok" if self.ok else f"{len(self.failures)} failure(s)"
        lines.append(f"{self.run_dir}: {status} in {self.seconds:.1f}s")
        return "\n".join(lines)
