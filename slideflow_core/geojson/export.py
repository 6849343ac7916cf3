"""Export slide stores as QuPath GeoJSON: tissue and ROIs, tiles with scores, cells.

One call per store streams every layer into one file in bounded memory::

    from slideflow_core.geojson import export_store
    export_store("project/stores/S1.zarr", "S1.geojson.gz", run="abmil", what=("tiles",))

The rules each feature follows (object types, classifications, measurements,
ids, orientation, the bounds origin) are in :mod:`slideflow_core.geojson.objects`.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.cells import CellTable
from slideflow_core.geojson.objects import (
    ORIGINS,
    Classification,
    GeometryStats,
    IdSource,
    annotation_features,
    origin_offset,
    tile_features,
)
from slideflow_core.geojson.overlays import StoreOverlays
from slideflow_core.geojson.read import read_geojson
from slideflow_core.geojson.write import GeoJSONWriter
from slideflow_core.store import StoreError

log = logging.getLogger(__name__)

LAYERS = ("tissue", "tiles", "cells")
#: Endings of an output name that make it a file rather than a folder.
FILE_SUFFIXES = (".geojson", ".gz", ".ndjson", ".geojsonl", ".json")
TISSUE = Classification(name="Tissue", color=(120, 120, 120))


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """What to export from a store and how.

    Attributes
    ----------
    what
        Layers, any of ``tissue`` (tissue outline and tiling ROI as
        annotations), ``tiles`` (squares with QC values and run scores) and
        ``cells`` (the cell table); ``("all",)`` means every layer. A layer the
        store lacks is skipped with a log line, unless it is the only one asked.
    run
        MIL run whose scores become tile measurements (``attention/<run>``).
    origin
        ``"qupath"`` (subtract the OpenSlide bounds offset, as QuPath shows the
        slide) or ``"slide"`` (full frame); see
        :func:`~slideflow_core.geojson.objects.origin_offset`.
    tile_object_type
        ``"tile"`` or ``"detection"`` (QuPath measures and colours detections by
        measurement directly).
    keep_only
        Only tiles whose QC ``keep`` flag is set.
    precision
        Decimals kept in polygon coordinates (0–6).
    simplify_px
        Douglas–Peucker tolerance for tissue and cell polygons, level-0 px (None: off).
    ndjson
        Newline-delimited features; by default chosen from the output suffix.
    compresslevel
        gzip level for ``.gz`` outputs.
    cells_table
        A cell table to export instead of the store's own ``cells`` part.
    batch_rows
        Tiles encoded per batch (bounds memory).
    """

    what: tuple[str, ...] = LAYERS
    run: str | None = None
    origin: str = "qupath"
    tile_object_type: str = "tile"
    keep_only: bool = False
    precision: int = 2
    simplify_px: float | None = None
    ndjson: bool | None = None
    compresslevel: int = 6
    cells_table: str | None = None
    batch_rows: int = 10_000

    def __post_init__(self) -> None:
        what = tuple(self.what)
        if "all" in what:
            what = LAYERS
        unknown = sorted(set(what) - set(LAYERS))
        if unknown or not what:
            raise ValueError(f"what must be layers among {LAYERS} or 'all', got {self.what!r}")
        object.__setattr__(self, "what", tuple(layer for layer in LAYERS if layer in what))
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {self.origin!r}")
        if self.tile_object_type not in ("tile", "detection"):
            raise ValueError(
                f"tile_object_type must be 'tile' or 'detection', got {self.tile_object_type!r}"
            )
        if not 0 <= self.precision <= 6:
            raise ValueError(f"precision must be 0-6 decimals, got {self.precision}")
        if self.simplify_px is not None and not self.simplify_px >= 0:
            raise ValueError(f"simplify_px must be >= 0, got {self.simplify_px}")
        if not 1 <= self.compresslevel <= 9:
            raise ValueError(f"compresslevel must be 1-9, got {self.compresslevel}")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, got {self.batch_rows}")


@dataclass(frozen=True)
class ExportSummary:
    """What one export wrote.

    Attributes
    ----------
    path
        The file.
    slide_id
        The slide.
    counts
        Features written per layer.
    fixed, dropped
        Invalid polygons repaired, and dropped because nothing polygonal was left.
    seconds
        Wall time.
    error
        Why the slide failed (batch exports go on with the other slides).
    """

    path: Path
    slide_id: str
    counts: dict[str, int] = field(default_factory=dict)
    fixed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def total(self) -> int:
        """Features written."""
        return sum(self.counts.values())

    def __str__(self) -> str:
        if self.error:
            return f"{self.slide_id}: FAILED {self.error}"
        layers = ", ".join(f"{n} {layer}" for layer, n in self.counts.items()) or "nothing"
        repair = (
            f"; {self.fixed} polygons repaired, {self.dropped} dropped"
            if (self.fixed or self.dropped)
            else ""
        )
        return f"{self.slide_id}: {layers} -> {self.path} ({self.seconds:.1f} s{repair})"


class _Export:
    """One store being exported: the layers as batches of encoded features."""

    def __init__(self, overlays: StoreOverlays, options: ExportOptions) -> None:
        self.overlays = overlays
        self.options = options
        self.offset = origin_offset(overlays.bounds, options.origin)
        self.stats = GeometryStats()
        self.polygon_options: dict[str, Any] = {
            "offset": self.offset,
            "precision": options.precision,
            "simplify_px": options.simplify_px,
        }

    def ids(self, layer: str) -> IdSource:
        return IdSource(f"{self.overlays.slide_id}/{layer}/{self.options.run or ''}")

    def tissue(self) -> Iterator[list[str]]:
        ids = self.ids("tissue")
        regions = self.overlays.tissue
        if regions:
            yield annotation_features(
                regions,
                ids=ids,
                classification=TISSUE,
                name="Tissue",
                stats=self.stats,
                **self.polygon_options,
            )
        roi = self.overlays.roi_path
        if roi is not None:
            for feature in read_geojson(roi):
                if feature.geometry.geom_type not in ("Polygon", "MultiPolygon"):
                    continue
                name = feature.classification
                colors = {name: feature.color} if name and feature.color else None
                klass = Classification.named(name, colors) if name else None
                yield annotation_features(
                    [feature.geometry],
                    ids=ids,
                    classification=klass,
                    name="ROI",
                    stats=self.stats,
                    **self.polygon_options,
                )

    def has(self, layer: str) -> bool:
        if layer == "tissue":
            return bool(self.overlays.tissue) or self.overlays.roi_path is not None
        if layer == "tiles":
            return self.overlays.tiling is not None
        return self.options.cells_table is not None or self.overlays.cell_table() is not None

    def tiles(self) -> Iterator[list[str]]:
        overlays, options = self.overlays, self.options
        coords, qc = overlays.coords, overlays.qc
        scores = overlays.scores(options.run) if options.run else None
        extent = overlays.tile_extent_px
        ids = self.ids("tiles")
        keep = qc.get("keep") if options.keep_only else None
        for start in range(0, len(coords), options.batch_rows):
            rows = slice(start, min(start + options.batch_rows, len(coords)))
            measurements = {name: values[rows] for name, values in qc.items()}
            classes = None
            if scores is not None:
                measurements.update(scores.measurements(rows))
                classes = scores.classifications(rows)
            picked = coords[rows]
            if keep is not None:
                mask = keep[rows] > 0
                picked = picked[mask]
                measurements = {n: v[mask] for n, v in measurements.items()}
                classes = (
                    [c for c, m in zip(classes, mask.tolist(), strict=True) if m]
                    if classes
                    else None
                )
            yield tile_features(
                picked,
                extent,
                ids=ids,
                measurements=measurements,
                classes=classes,
                object_type=options.tile_object_type,
                offset=self.offset,
                precision=options.precision,
            )

    def cells(self) -> Iterator[list[str]]:
        table = (
            CellTable(self.options.cells_table)
            if self.options.cells_table
            else self.overlays.cell_table()
        )
        if table is None:
            return
        # Seeded by the table: two cell tables of one slide never share UUIDs in QuPath.
        ids = IdSource(f"{self.overlays.slide_id}/cells/{table.identity}")
        for batch in table.batches():
            yield batch.features(
                ids=ids, colors=table.class_colors, stats=self.stats, **self.polygon_options
            )


def export_store(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
    **kwargs: Any,
) -> ExportSummary:
    """Write one slide store's overlays to a GeoJSON file QuPath opens.

    Parameters
    ----------
    store
        A committed slide store (``<slide_id>.zarr``).
    out
        ``.geojson`` or ``.geojson.gz`` (FeatureCollection), or ``.ndjson``
        (newline-delimited); written atomically.
    options
        An :class:`ExportOptions`; or give its fields as keyword arguments.

    Raises
    ------
    StoreError
        If the store is missing, or the only layer asked for is not in it, or
        the run is missing.
    """
    options = options or ExportOptions(**kwargs)
    started = time.perf_counter()
    overlays = StoreOverlays(store)
    job = _Export(overlays, options)
    layers = [layer for layer in options.what if job.has(layer)]
    missing = [layer for layer in options.what if layer not in layers]
    if missing and not layers:
        raise StoreError(
            f"{store} has no {' or '.join(missing)} to export",
            hint="tile the slide (tissue, tiles) or run the cells stage (cells) first",
        )
    for layer in missing:
        log.info("%s: no %s in the store; skipped", overlays.slide_id, layer)
    counts: dict[str, int] = {}
    with GeoJSONWriter(out, ndjson=options.ndjson, compresslevel=options.compresslevel) as writer:
        for layer in layers:
            counts[layer] = sum(writer.write_encoded(b) for b in getattr(job, layer)())
    summary = ExportSummary(
        path=Path(out),
        slide_id=overlays.slide_id,
        counts=counts,
        fixed=job.stats.fixed,
        dropped=job.stats.dropped,
        seconds=time.perf_counter() - started,
    )
    if job.stats.fixed or job.stats.dropped:
        log.warning(
            "%s: %d invalid polygons repaired, %d dropped (nothing polygonal left)",
            overlays.slide_id,
            job.stats.fixed,
            job.stats.dropped,
        )
    log.debug("%s", summary)
    return summary


def is_geojson_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GeoJSON file (``.geojson``, ``.geojson.gz``, ``.ndjson``...)."""
    return Path(path).name.lower().endswith(FILE_SUFFIXES)


def find_stores(target: str | os.PathLike[str]) -> tuple[list[Path], str | None]:
    """The stores of a store, project (``stores/*.zarr``) or run folder (``runs/<run>``).

    Returns the stores and, for a run folder, the run name; a run folder with a
    ``predictions.csv`` gives only the stores of the slides the run scored.

    Raises
    ------
    StoreError
        If no store is found there.
    """
    path = Path(target)
    run = None
    if path.parent.name == "runs" and path.is_dir():
        run, path = path.name, path.parent.parent
    if (path / "zarr.json").is_file():
        return [path], run
    stores = sorted(p for p in (path / "stores").glob("*.zarr") if (p / "zarr.json").is_file())
    predictions = Path(target) / "predictions.csv"
    if run is not None and predictions.is_file():
        with open(predictions, newline="") as table:
            scored = {row["slide_id"] for row in csv.DictReader(table)}
        stores = [store for store in stores if store.stem in scored]
    if not stores:
        raise StoreError(
            f"no slide store found at {target}",
            hint="give a <slide>.zarr store, a project folder (with stores/) or runs/<run>",
        )
    return stores, run


def export_stores(
    target: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: ExportOptions | None = None,
    suffix: str = ".geojson",
    **kwargs: Any,
) -> list[ExportSummary]:
    """Export every store of a store, project or run folder; one file per slide.

    A single store is written to ``out`` itself when ``out`` ends like a
    GeoJSON file; otherwise ``out`` is a folder of ``<slide_id><suffix>`` files.
    A run folder's name is the default ``run``. A slide that fails does not
    stop the others: its summary carries the ``error``.

    Raises
    ------
    StoreError
        If no store is found at ``target``.
    """
    stores, run = find_stores(target)
    if options is None:
        options = ExportOptions(**{"run": run, **kwargs})
    out = Path(out)
    if len(stores) == 1 and is_geojson_name(out):
        return [export_store(stores[0], out, options=options)]
    summaries = []
    for store in stores:
        path = out / f"{store.stem}{suffix}"
        try:
            summaries.append(export_store(store, path, options=options))
        except SlideflowError as exc:
            log.error("%s: %s", store.name, exc)
            summaries.append(ExportSummary(path=path, slide_id=store.stem, error=str(exc)))
    return summaries
