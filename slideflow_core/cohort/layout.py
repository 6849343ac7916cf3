"""Where the outputs of a cohort live on disk."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slideflow_core.cohort.ids import safe_slide_id, unsafe_reason
from slideflow_core.cohort.records import is_uri

# (path pattern, what it holds): the single description used by describe().
_ENTRIES = (
    ("manifest.csv", "the resolved cohort: one row per slide, absolute paths"),
    (
        "stores/<slide_id>.zarr",
        "one Zarr store per slide: tiles, coords, features, attention, cells",
    ),
    ("thumbnails/<slide_id>.png", "slide overviews"),
    ("status/<slide_id>.json", "per-slide progress and errors of each stage"),
    ("runs/<run_name>/", "MIL experiments: config, splits, models, metrics"),
    ("exports/", "GeoJSON and other files for QuPath and viewers"),
    ("logs/", "logs of every command"),
)
_FOLDERS = ("stores", "thumbnails", "status", "runs", "exports", "logs")


@dataclass(frozen=True)
class ProjectLayout:
    """The folder structure holding everything computed for a cohort.

    Every per-slide path is built from a slide id checked by
    :func:`~slideflow_core.cohort.safe_slide_id`, so no id can name a file
    outside its folder.

    Parameters
    ----------
    root
        Local project folder (``str`` or path; ``~`` is expanded, and it is
        made absolute).

    Examples
    --------
    >>> layout = ProjectLayout("/data/project")
    >>> layout.store("TCGA-01").as_posix()
    '/data/project/stores/TCGA-01.zarr'
    """

    root: Path

    def __post_init__(self) -> None:
        raw = os.fspath(self.root)
        if is_uri(raw):
            raise ValueError(f"project root must be a local folder, got the URI {raw!r}")
        object.__setattr__(self, "root", Path(raw).expanduser().absolute())

    @property
    def manifest(self) -> Path:
        """The resolved cohort, ``root/manifest.csv``."""
        return self.root / "manifest.csv"

    @property
    def stores_dir(self) -> Path:
        """Folder of the per-slide Zarr stores."""
        return self.root / "stores"

    @property
    def thumbnails_dir(self) -> Path:
        """Folder of the slide thumbnails."""
        return self.root / "thumbnails"

    @property
    def status_dir(self) -> Path:
        """Folder of the per-slide status files."""
        return self.root / "status"

    @property
    def runs_dir(self) -> Path:
        """Folder of the MIL experiment runs."""
        return self.root / "runs"

    @property
    def exports(self) -> Path:
        """Folder of exported files (GeoJSON...)."""
        return self.root / "exports"

    @property
    def logs(self) -> Path:
        """Folder of logs."""
        return self.root / "logs"

    def store(self, slide_id: str) -> Path:
        """``root/stores/<slide_id>.zarr``; ``ValueError`` for an unsafe id."""
        return self.stores_dir / f"{safe_slide_id(slide_id)}.zarr"

    def thumbnail(self, slide_id: str) -> Path:
        """``root/thumbnails/<slide_id>.png``; ``ValueError`` for an unsafe id."""
        return self.thumbnails_dir / f"{safe_slide_id(slide_id)}.png"

    def status(self, slide_id: str, stage: str | None = None) -> Path:
        """``root/status/<slide_id>.json`` (tiling) or ``root/status/<stage>/<slide_id>.json``.

        ``ValueError`` for an unsafe id or stage name.
        """
        if stage is None:
            return self.status_dir / f"{safe_slide_id(slide_id)}.json"
        reason = unsafe_reason(stage)
        if reason is not None:
            raise ValueError(f"unsafe stage name {stage!r}: {reason}")
        return self.status_dir / stage / f"{safe_slide_id(slide_id)}.json"

    def write_status(
        self, slide_id: str, record: dict[str, Any], stage: str | None = None
    ) -> Path | None:
        """Atomically write a slide's status record (with the time) to :meth:`status`.

        Returns the path, or ``None`` for an unsafe id, which names no file (the
        stage's summary table still carries its row).
        """
        try:
            path = self.status(slide_id, stage)
        except ValueError:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        os.replace(tmp, path)
        return path

    def run(self, name: str) -> Path:
        """``root/runs/<name>``; ``ValueError`` for a name unsafe as a folder name."""
        reason = unsafe_reason(name)
        if reason is not None:
            raise ValueError(f"unsafe run name {name!r}: {reason}")
        return self.runs_dir / name

    def ensure(self) -> ProjectLayout:
        """Create the root and every output folder (existing ones are kept)."""
        for name in _FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self

    def describe(self) -> str:
        """The layout as text, one line per entry."""
        width = max(len(pattern) for pattern, _ in _ENTRIES)
        lines = [f"{self.root}/"]
        lines += [f"  {pattern:<{width}}  {what}" for pattern, what in _ENTRIES]
        return "\n".join(lines)
