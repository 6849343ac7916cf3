"""A run directory: a project folder, on local/shared disk or mirrored to object storage.

Stages always build stores in a local (or shared) project folder, where
renames are atomic. When the run directory is a URL (``s3://bucket/project``),
that folder is a work cache: finished stores are uploaded with their commit
marker last, stores a previous run left on object storage are downloaded
before more stages are added to them, and the pipeline's own files
(``pipeline/config.yaml``, ``pipeline/state.json``, ``pipeline/report.json``,
``manifest.csv``) are written to both places.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cluster.objectstore import (
    download_store,
    join,
    read_text,
    upload_store,
    write_bytes,
    write_text,
)
from slideflow_core.cohort import ProjectLayout
from slideflow_core.cohort.ids import safe_slide_id
from slideflow_core.cohort.records import is_uri

#: Folder of the pipeline's own files inside a run directory.
PIPELINE_DIR = "pipeline"
#: Per-slide exported files (QuPath GeoJSON, heatmaps) and cohort-level prediction tables.
EXPORTS_DIR = "exports"
PREDICTIONS_DIR = "predictions"


def default_work_dir(url: str) -> Path:
    """Local build folder for an object-storage run directory.

    ``$SFC_WORK_DIR/<name>-<digest>``, else ``~/.cache/slideflow-core/runs/<name>-<digest>``;
    the digest of the URL keeps two runs with the same last name apart.
    """
    base = os.environ.get("SFC_WORK_DIR") or Path.home() / ".cache" / "slideflow-core" / "runs"
    name = url.rstrip("/").rsplit("/", 1)[-1] or "run"
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return Path(base) / f"{safe_slide_id(name)}-{digest}"


@dataclass(frozen=True)
class RunDirectory:
    """Where a pipeline run writes: a project layout, optionally mirrored to a URL.

    Attributes
    ----------
    url
        The configured run directory (a local path, or a URL such as ``s3://b/p``).
    layout
        The project folder stages write into (the run directory itself when it
        is local, the work cache when it is a URL).
    """

    url: str
    layout: ProjectLayout

    @classmethod
    def open(cls, run_dir: str, *, work_dir: str | None = None) -> RunDirectory:
        """The run directory for ``run_dir``, its local folders created."""
        if is_uri(run_dir):
            local = Path(work_dir) if work_dir else default_work_dir(run_dir)
            return cls(run_dir.rstrip("/"), ProjectLayout(local).ensure())
        layout = ProjectLayout(Path(run_dir).resolve()).ensure()
        return cls(str(layout.root), layout)

    @property
    def remote(self) -> bool:
        """Whether outputs are mirrored to object storage."""
        return is_uri(self.url)

    def store_url(self, slide_id: str) -> str:
        """Where a slide's store lives for readers: its URL, or its local path."""
        if self.remote:
            return join(self.url, "stores", self.layout.store(slide_id).name)
        return str(self.layout.store(slide_id))

    def write(self, name: str, text: str) -> None:
        """Write ``<run_dir>/<name>`` (locally by atomic rename; remotely in one PUT)."""
        path = self.layout.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        if self.remote:
            write_text(join(self.url, name), text)

    def read(self, name: str) -> str | None:
        """The text of ``<run_dir>/<name>`` (object storage wins), or None."""
        if self.remote:
            return read_text(join(self.url, name))
        path = self.layout.root / name
        return path.read_text() if path.is_file() else None

    def pull(self, slide_id: str) -> bool:
        """Fetch a slide's store from object storage unless a local copy exists."""
        local = self.layout.store(slide_id)
        if not self.remote or local.exists():
            return False
        return download_store(self.store_url(slide_id), local)

    def push(self, slide_id: str, *, keep_local: bool = True) -> int:
        """Upload a slide's exported files, then its committed store (marker last).

        Returns the files sent. The store's marker says which outputs are
        complete, so it goes after the files it vouches for.
        """
        if not self.remote:
            return 0
        local = self.layout.store(slide_id)
        exports = sorted(self.layout.exports.glob(f"{glob.escape(local.stem)}.*"))
        for path in exports:
            write_bytes(join(self.url, EXPORTS_DIR, path.name), path.read_bytes())
        sent = len(exports) + upload_store(local, self.store_url(slide_id))
        if not keep_local:
            shutil.rmtree(local, ignore_errors=True)
        return sent

    def push_outputs(self) -> int:
        """Upload the cohort-level tables (``predictions/``); returns files sent."""
        if not self.remote:
            return 0
        files = sorted(p for p in (self.layout.root / PREDICTIONS_DIR).glob("*") if p.is_file())
        for path in files:
            write_bytes(join(self.url, PREDICTIONS_DIR, path.name), path.read_bytes())
        return len(files)
