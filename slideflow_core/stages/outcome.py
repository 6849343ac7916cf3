"""What a stage did to each slide, and to the cohort: one outcome type, one report type."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from slideflow_core.cohort.ids import printable
from slideflow_core.errors import DiskFullError, disk_full, failure_text

#: What a stage can have done to a slide. ``blocked``: an earlier stage failed it.
STATUSES = ("done", "skipped", "failed", "blocked")


@dataclass(frozen=True)
class SlideOutcome:
    """What one stage did to one slide (one row of every report and status file).

    Attributes
    ----------
    slide_id
        The slide.
    status
        ``done``, ``skipped`` (its part was already complete with the same
        identity), ``failed`` (``error`` says why) or ``blocked``.
    store
        The slide's store (or output file) the stage wrote.
    n_tiles
        Tiles the stage went through (the unit of progress of every stage).
    seconds
        Wall time spent on the slide.
    error, hint
        One-line failure and its fix, for failed slides.
    details
        Stage-specific values (``n_kept``, ``n_cells``, a prediction row...).
    """

    slide_id: str
    status: str
    store: str = ""
    n_tiles: int = 0
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @classmethod
    def failed(
        cls, slide_id: str, exc: BaseException, *, store: str = "", seconds: float = 0.0
    ) -> SlideOutcome:
        """A ``failed`` outcome for ``exc`` (its message and hint, one line each).

        A full disk is said plainly and flagged (``details["disk_full"]``): the
        runner then stops the cohort, since every next slide would fail the same way.
        """
        full = disk_full(exc)
        if full is not None:
            where = f" writing {full.filename}" if full.filename else ""
            exc = DiskFullError(
                f"the disk is full ({full.strerror}{where})",
                hint="free space, or give a project on a larger disk; rerun to finish the "
                "slides left (nothing half-written was marked done)",
            )
        return cls(
            slide_id,
            "failed",
            store=store,
            seconds=seconds,
            error=failure_text(exc),
            hint=getattr(exc, "hint", None),
            details={"disk_full": True} if full is not None else {},
        )

    @property
    def disk_full(self) -> bool:
        """Whether the slide failed because the disk was full."""
        return bool(self.details.get("disk_full"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (a status file's content)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideOutcome:
        """Read back :meth:`to_dict` (unknown keys, such as a status file's time, ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_seconds(self, seconds: float) -> SlideOutcome:
        """This outcome with another wall time."""
        return replace(self, seconds=seconds)


def _status_counts(results: tuple[SlideOutcome, ...]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


@dataclass(frozen=True)
class CohortReport:
    """Per-slide outcomes of one stage over a cohort, with totals.

    Attributes
    ----------
    stage
        The stage's registered name (``tile``, ``embed``...).
    part
        What it wrote (``tiling``, ``features/uni``, ``cells/classical``...).
    results
        One :class:`SlideOutcome` per slide, in cohort order.
    seconds
        Wall time of the run, start-up included.
    project
        The project folder.
    startup_seconds
        Of ``seconds``, the time until the first slide could start: the stage's
        checks (importing its models' code), Ray, and building the workers' models.
    info
        What the workers held and how they ran (model, actors, executor).
    """

    stage: str
    part: str
    results: tuple[SlideOutcome, ...]
    seconds: float
    project: str
    startup_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed

    @property
    def failed(self) -> list[SlideOutcome]:
        """Outcomes of the slides that failed."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def succeeded(self) -> list[str]:
        """Slides that may go on to the next stage (done or skipped)."""
        return [r.slide_id for r in self.results if r.status in ("done", "skipped")]

    @property
    def tiles_done(self) -> int:
        """Tiles processed in this run (skipped slides not counted)."""
        return sum(r.n_tiles for r in self.results if r.status == "done")

    @property
    def work_seconds(self) -> float:
        """Wall time after start-up: the slides' own work."""
        return max(0.0, self.seconds - self.startup_seconds)

    @property
    def tiles_per_s(self) -> float:
        """Tiles per second of wall time after start-up."""
        seconds = self.work_seconds
        return self.tiles_done / seconds if seconds > 0 else 0.0

    def outcome(self, slide_id: str) -> SlideOutcome:
        """The outcome of one slide (``KeyError`` if it was not in the run)."""
        for r in self.results:
            if r.slide_id == slide_id:
                return r
        raise KeyError(slide_id)

    def to_frame(self) -> pd.DataFrame:
        """One row per slide: id, status, tiles, seconds, error, hint, store, details."""
        columns = [c for c in SlideOutcome.__dataclass_fields__ if c != "details"]
        rows = []
        for r in self.results:
            row = {k: v for k, v in asdict(r).items() if k != "details"}
            extra = {k: v for k, v in r.details.items() if not isinstance(v, (dict, list))}
            columns += [k for k in extra if k not in columns]
            rows.append({**extra, **row})
        return pd.DataFrame(rows, columns=columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``status/<stage>.json``)."""
        return {
            "stage": self.stage,
            "part": self.part,
            "project": self.project,
            "seconds": self.seconds,
            "startup_seconds": self.startup_seconds,
            "tiles_done": self.tiles_done,
            "tiles_per_s": self.tiles_per_s,
            "info": self.info,
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=1, default=str)

    def __str__(self) -> str:
        if not self.results:
            return f"(no slides) {self.stage}: {self.part}"
        frame = self.to_frame()
        table = frame[["slide_id", "status", "n_tiles", "seconds"]].copy()
        table["slide_id"] = table["slide_id"].map(printable)  # ids may hold terminal escapes
        table["seconds"] = table["seconds"].map(lambda v: f"{v:.1f}")
        lines = [table.to_string(index=False)]
        for r in self.failed:
            lines.append(f"  {printable(r.slide_id)}: {printable(str(r.error))}")
        rate = f" ({self.tiles_per_s:.0f} tiles/s)" if self.tiles_done else ""
        startup = f", {self.startup_seconds:.1f}s to start" if self.startup_seconds else ""
        lines.append(
            f"{self.stage}: {len(self.results)} slides: {_status_counts(self.results)}; "
            f"{self.tiles_done} tiles into {self.part} in {self.seconds:.1f}s{rate}{startup}"
        )
        return "\n".join(lines)
