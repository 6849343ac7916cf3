"""The export stage: every slide's overlays as QuPath GeoJSON, and its heatmap, in ``exports/``.

Per slide it writes ``<project>/exports/<slide_id>.geojson.gz`` (through
:func:`~slideflow_core.geojson.export_store`) and, when the store holds the
scores of the run asked for, ``<slide_id>.heatmap.png``. Both are written under
temporary names and renamed into place; then ``<slide_id>.export.json`` is
written, last: it records what the files were made from (the config, and the
identity and file manifest of every store part read) and the files themselves
with sizes and checksums (``sfc verify`` checks them; ``--repair`` redoes a
damaged export from the recorded config). A rerun skips a slide whose record
matches and whose files are there at their recorded sizes, and redoes one whose
store has changed since (a new MIL run, new cells): exports are cheap to redo,
so a stale one is refreshed rather than refused. A store at a URL (a pipeline's
``s3://`` run directory) is checked against the record uploaded beside it, in
``<run_dir>/exports/``, without downloading anything.

It runs as Ray tasks, one per slide: a cohort's exports spread over the
cluster's cores, and the stores are read where the workers are.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from slideflow_core.cohort import ProjectLayout
from slideflow_core.cohort.records import is_uri
from slideflow_core.features import attention_part
from slideflow_core.geojson.export import LAYERS, ExportOptions, ExportSummary, export_store
from slideflow_core.geojson.overlays import TILING_PART, StoreOverlays
from slideflow_core.manifest import build_manifest, check_manifest
from slideflow_core.stages import Plan, SlideOutcome, SlideRef, StageDefaults, Unit
from slideflow_core.store import MANIFEST, StoreError, read_store_attrs

#: The store part holding (a pointer to) a slide's cell table.
CELLS_PART = "cells"


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What the export stage writes for each slide.

    Attributes
    ----------
    what
        Layers among ``tissue``, ``tiles`` and ``cells`` (``("all",)``: every
        layer); a layer a store lacks is skipped unless it is the only one.
    run
        MIL run whose scores become tile measurements and the heatmap.
    origin
        ``"qupath"`` (coordinates from the slide's bounds corner, as QuPath shows
        it) or ``"slide"`` (full level-0 frame).
    tile_type
        QuPath ``objectType`` of tiles: ``"tile"`` or ``"detection"``.
    keep_only
        Only tiles that passed QC.
    simplify_px
        Douglas–Peucker tolerance of tissue and cell polygons, level-0 px (None: off).
    precision
        Decimals kept in coordinates (0–6).
    gzip
        Write ``.geojson.gz`` (QuPath reads it directly) instead of ``.geojson``.
    heatmap
        Also draw ``<slide_id>.heatmap.png`` when the store has the run's scores.
    column
        Value the heatmap shows (default: the run's first score column).
    out
        Folder of the files (default: the project's ``exports/``); a relative path is
        taken from the current folder when the config is made.
    """

    what: tuple[str, ...] = LAYERS
    run: str | None = None
    origin: str = "qupath"
    tile_type: str = "tile"
    keep_only: bool = False
    simplify_px: float | None = None
    precision: int = 2
    gzip: bool = True
    heatmap: bool = True
    column: str | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        what = (self.what,) if isinstance(self.what, str) else tuple(self.what)
        object.__setattr__(self, "what", what)
        object.__setattr__(self, "what", self.options().what)  # validated and in layer order
        if self.out is not None and not is_uri(str(self.out)):
            # Resolved where the config is made: a Ray worker runs in another folder.
            object.__setattr__(self, "out", str(Path(self.out).expanduser().absolute()))

    def options(self) -> ExportOptions:
        """The :class:`ExportOptions` of :func:`export_store` (validates every value)."""
        return ExportOptions(
            what=self.what,
            run=self.run,
            origin=self.origin,
            tile_object_type=self.tile_type,
            keep_only=self.keep_only,
            simplify_px=self.simplify_px,
            precision=self.precision,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "what": list(self.what)}

    def identity(self) -> dict[str, Any]:
        """The settings that change what the files hold (not where they go)."""
        data = self.to_dict()
        data.pop("out")
        return data


@dataclass(frozen=True)
class ExportFiles:
    """Where one slide's export goes: the GeoJSON, the heatmap and the record beside them.

    ``folder`` is a local folder, or a URL (``s3://.../exports``) whose record is
    only read (through fsspec).
    """

    folder: Path | str
    slide_id: str
    gzip: bool

    def _at(self, name: str) -> Path:
        assert isinstance(self.folder, Path), "written locally only"
        return self.folder / name

    @property
    def geojson(self) -> Path:
        """``<slide_id>.geojson.gz`` (or ``.geojson``)."""
        return self._at(f"{self.slide_id}.geojson{'.gz' if self.gzip else ''}")

    @property
    def heatmap(self) -> Path:
        """``<slide_id>.heatmap.png``."""
        return self._at(f"{self.slide_id}.heatmap.png")

    @property
    def record(self) -> Path:
        """``<slide_id>.export.json``: what the files were made from; written last."""
        return self._at(f"{self.slide_id}.export.json")

    def read_record(self) -> dict[str, Any] | None:
        """The record (local or at the folder's URL), or ``None`` when absent or unreadable."""
        name = f"{self.slide_id}.export.json"
        try:
            if isinstance(self.folder, Path):
                text = (self.folder / name).read_text()
            else:
                import fsspec

                fs, base = fsspec.core.url_to_fs(self.folder)
                text = fs.cat_file(f"{base.rstrip('/')}/{name}").decode()
            record = json.loads(text)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def current(self, identity: dict[str, Any]) -> bool:
        """Whether the record matches ``identity`` and every file it lists is there as written."""
        record = self.read_record()
        if record is None or record.get("identity") != _jsonable(identity):
            return False
        manifest = record.get(MANIFEST)
        if manifest:
            return check_manifest(self.folder, manifest).ok
        names = [name for name in record.get("files", {}).values() if name]
        # A record from before manifests: its files must exist (checked locally only).
        return isinstance(self.folder, Path) and all(self._at(n).is_file() for n in names)

    def write_record(
        self, identity: dict[str, Any], files: dict[str, Path | None], config: dict[str, Any]
    ) -> None:
        """Write the record atomically (after the files it describes), with their manifest."""
        names = {kind: path.name if path else None for kind, path in files.items()}
        record = {
            "slide_id": self.slide_id,
            "identity": identity,
            "config": config,
            "files": names,
            MANIFEST: build_manifest(self._at("."), [n for n in names.values() if n]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self.record.with_name(f".{self.record.name}.partial")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, self.record)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _part_stamp(name: str, parts: dict[str, Any]) -> dict[str, Any] | None:
    """What identifies the version of part ``name`` (None when it is missing).

    The recorded identity and time, and a digest of the part's file manifest
    (sizes and checksums), which a rewrite of the part changes even when its
    identity is the same; all read from the store's root record, so a store at
    a URL is stamped without reading its parts.
    """
    info = parts.get(name)
    if not info or not info.get("complete"):
        return None
    manifest = info.get(MANIFEST)
    digest = None
    if manifest:
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return {"identity": info.get("identity"), "time": info.get("time"), "files": digest}


class ExportStage(StageDefaults):
    """QuPath GeoJSON (and tile heatmaps) of every slide store into ``exports/``."""

    name: ClassVar[str] = "export"
    executor: ClassVar[str] = "tasks"
    order: ClassVar[int] = 50
    #: Starting Ray (about 5 s) costs more than exporting a small project here (0.1-1 s each).
    local_slides: ClassVar[int] = 16
    Config = ExportConfig

    def __init__(self, config: ExportConfig | None = None) -> None:
        self.config = config or ExportConfig()

    def part(self) -> str:
        """The stage writes files beside the stores, in ``exports/``."""
        return "exports"

    def prepare(self, layout: ProjectLayout) -> None:
        """Create the output folder."""
        self.folder(layout.root).mkdir(parents=True, exist_ok=True)

    def folder(self, project: str | os.PathLike[str]) -> Path:
        """Where the files of ``project``'s slides go: ``out``, or ``<project>/exports``."""
        if self.config.out is not None:
            return Path(self.config.out).expanduser().absolute()
        return ProjectLayout(Path(project)).exports

    def files(self, slide_id: str, store: str | os.PathLike[str]) -> ExportFiles:
        """Where the export of ``slide_id``, whose store is ``<project>/stores/<id>.zarr``, goes.

        For a store at a URL (``<run_dir>/stores/<id>.zarr``), ``<run_dir>/exports``
        unless ``out`` is set.
        """
        raw = os.fspath(store).rstrip("/")
        if is_uri(raw) and self.config.out is None:
            run_dir = raw.rsplit("/", 2)[0]
            return ExportFiles(f"{run_dir}/exports", slide_id, self.config.gzip)
        return ExportFiles(self.folder(Path(store).parent.parent), slide_id, self.config.gzip)

    def identity(self, store: str | os.PathLike[str]) -> dict[str, Any]:
        """The config and the version of every store part an export of ``store`` reads."""
        return self._identity(read_store_attrs(store).get("parts", {}))

    def _identity(self, parts: dict[str, Any]) -> dict[str, Any]:
        names = [TILING_PART]
        if self.config.run is not None:
            names.append(attention_part(self.config.run))
        if "cells" in self.config.what:
            names.append(CELLS_PART)
        return {
            "config": self.config.identity(),
            "parts": {name: _part_stamp(name, parts) for name in names},
        }

    def done(self, store: str) -> bool:
        """Whether the store's export files exist and were made from its current parts.

        ``store`` may be a URL: its record and the export record are read there.
        """
        slide_id = store.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr")
        try:
            identity = self.identity(store)
        except (OSError, StoreError):
            return False
        return self.files(slide_id, store).current(identity)

    def plan(self, slide: SlideRef, resource: Any, *, overwrite: bool) -> Plan | SlideOutcome:
        """Skip a slide whose export is current; else one unit: the whole slide."""
        started = time.time()
        files = self.files(slide.slide_id, slide.store)
        parts = read_store_attrs(slide.store).get("parts", {})
        identity = self._identity(parts)
        if not overwrite and files.current(identity):
            details = {"geojson": str(files.geojson)}
            return SlideOutcome(slide.slide_id, "skipped", store=slide.store, details=details)
        n_tiles = int((parts.get(TILING_PART) or {}).get("n_tiles", 0))
        return Plan(slide, (Unit(0, n_tiles),), state=(files, identity), started=started)

    def run(self, plan: Plan, unit: Unit, resource: Any, progress: Any) -> Any:
        """Write the GeoJSON and (when there are scores) the heatmap, each renamed into place."""
        files: ExportFiles = plan.state[0]
        files.folder.mkdir(parents=True, exist_ok=True)
        files.record.unlink(missing_ok=True)  # the files are about to change
        summary = export_store(plan.slide.store, files.geojson, options=self.config.options())
        return summary, self._heatmap(plan.slide.store, files)

    def _heatmap(self, store: str, files: ExportFiles) -> Path | None:
        config = self.config
        if not config.heatmap or config.run is None:
            return None
        if config.run not in StoreOverlays(store).runs():
            return None
        from slideflow_core.viewer.heatmap import write_heatmap

        tmp = files.heatmap.with_name(f".{files.slide_id}.heatmap.partial.png")
        write_heatmap(store, tmp, run=config.run, column=config.column)
        os.replace(tmp, files.heatmap)
        return files.heatmap

    def commit(self, plan: Plan, results: Sequence[Any], resource: Any) -> SlideOutcome:
        """Write the record that makes the slide's export complete."""
        files, identity = plan.state
        summary: ExportSummary = results[0][0]
        heatmap: Path | None = results[0][1]
        written = {"geojson": files.geojson, "heatmap": heatmap}
        files.write_record(identity, written, self.config.to_dict())
        details: dict[str, Any] = {f"n_{layer}": n for layer, n in summary.counts.items()}
        details.update(geojson=str(files.geojson), heatmap=str(heatmap) if heatmap else None)
        return SlideOutcome(
            plan.slide.slide_id,
            "done",
            store=plan.slide.store,
            n_tiles=summary.counts.get("tiles", 0),
            seconds=time.time() - plan.started,
            details=details,
        )
