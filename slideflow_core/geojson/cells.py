"""The cell table: nuclei and cells of one slide as Parquet, streamed in batches.

The cells stage writes one table per slide; exporters and the viewer read it
without loading it whole. Schema (one row per object, coordinates in level-0
pixels of the slide's full frame, y down, the frame of the tiling ``coords``)::

    column         type                      required  meaning
    geometry       binary (WKB Polygon or    yes       nucleus outline
                   MultiPolygon)
    cell_geometry  binary (WKB), nullable    no        cell boundary (QuPath ``cell``
                                                       with ``nucleusGeometry``); rows
                                                       without one export as ``detection``
    class          string, nullable          no        class name (QuPath classification)
    <any other>    integer, float or bool    no        a measurement named after the column
                                                       (nulls and NaN are omitted on export)

Schema metadata ``slideflow.class_colors`` may hold a JSON object ``{class:
[r, g, b]}``; classes without a colour get a stable palette colour. Write
rows in spatial order (tile by tile, as a segmenter produces them) in row
groups of about 10,000: readers hold one decoded row group at a time (a few
KB a row), so the row group size bounds their memory, and the viewer's box
queries read only the few row groups near the box.

A slide store's cell tables live beside it, outside its Zarr hierarchy (so Zarr
and xarray listings meet no foreign file): ``stores/<id>.cells/<run>/cells.parquet``
next to ``stores/<id>.zarr`` (see :func:`cells_folder`). The store's
``cells/<run>`` part records the table's path relative to the store
(``../<id>.cells/<run>/cells.parquet``) and its manifest covers the table.
Stores written before kept it inside (``cells/cells.parquet``); both are read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.objects import Classification, IdSource, cell_features

GEOMETRY = "geometry"
CELL_GEOMETRY = "cell_geometry"
CLASS = "class"
CLASS_COLORS_KEY = b"slideflow.class_colors"
CELLS_PART = "cells"
DEFAULT_TABLE = "cells/cells.parquet"
ROW_GROUP_ROWS = 10_000
BATCH_ROWS = 10_000


class CellTableError(SlideflowError):
    """A cell table is missing or does not follow the cell table schema."""


def _is_measurement(field: pa.Field) -> bool:
    kind = field.type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


class CellBatch:
    """Rows of a cell table, decoded for export.

    Attributes
    ----------
    nuclei
        Object array of nucleus geometries.
    cells
        Object array of cell boundaries (``None`` where absent), or None.
    classes
        Class name per row (``None`` when unclassified), or None.
    measurements
        Measurement name → float64 values (NaN where null).
    rows
        Row numbers in the table.
    """

    def __init__(
        self, table: pa.Table | pa.RecordBatch, measurement_columns: Sequence[str], rows: np.ndarray
    ) -> None:
        names = table.schema.names
        self.nuclei = shapely.from_wkb(table.column(GEOMETRY).to_numpy(zero_copy_only=False))
        self.cells = (
            shapely.from_wkb(table.column(CELL_GEOMETRY).to_numpy(zero_copy_only=False))
            if CELL_GEOMETRY in names
            else None
        )
        self.classes: list[str | None] | None = (
            table.column(CLASS).to_pylist() if CLASS in names else None
        )
        self.measurements = {
            name: pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
            for name in measurement_columns
            if name in names
        }
        self.rows = rows

    def __len__(self) -> int:
        return len(self.nuclei)

    def features(
        self, *, ids: IdSource, colors: Mapping[str, Sequence[int]] | None = None, **options: Any
    ) -> list[str]:
        """These rows as encoded QuPath features (see :func:`~.objects.cell_features`).

        Parameters
        ----------
        ids
            Where feature ids come from.
        colors
            Class colours (classes without one get a stable palette colour).
        options
            ``offset``, ``precision``, ``simplify_px`` and ``stats``, passed on to
            :func:`~.objects.cell_features`.
        """
        classes = None
        if self.classes is not None:
            named = {c: Classification.named(c, colors) for c in set(self.classes) if c}
            classes = [named[c] if c else None for c in self.classes]
        return cell_features(
            self.nuclei,
            ids=ids,
            cells=self.cells,
            classes=classes,
            measurements=self.measurements,
            **options,
        )


class CellTable:
    """A cell table opened for streaming (see the module docstring for the schema).

    Parameters
    ----------
    path
        Parquet file.

    Raises
    ------
    CellTableError
        If the file is missing, not Parquet, or lacks a binary ``geometry`` column.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            # No pre-buffering: it reads ahead across row groups and memory grows with the file.
            # Page checksums (written by CellTableWriter) make a changed byte an error.
            self._file = pq.ParquetFile(
                self.path, pre_buffer=False, page_checksum_verification=True
            )
        except FileNotFoundError:
            raise CellTableError(
                f"cell table not found: {self.path}", hint="run the cells stage first"
            ) from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise CellTableError(f"{self.path} is not a Parquet cell table ({exc})") from exc
        schema = self._file.schema_arrow
        field = schema.field(GEOMETRY) if GEOMETRY in schema.names else None
        if field is None or (
            not pa.types.is_binary(field.type) and not pa.types.is_large_binary(field.type)
        ):
            raise CellTableError(
                f"{self.path}: no binary '{GEOMETRY}' column of WKB nucleus polygons",
                hint="see slideflow_core.geojson.cells for the cell table schema",
            )
        self.measurement_columns = tuple(
            f.name
            for f in schema
            if f.name not in (GEOMETRY, CELL_GEOMETRY, CLASS) and _is_measurement(f)
        )
        self.has_cells = CELL_GEOMETRY in schema.names
        self.has_classes = CLASS in schema.names
        raw = (schema.metadata or {}).get(CLASS_COLORS_KEY)
        self.class_colors: dict[str, list[int]] = json.loads(raw) if raw else {}
        sizes = [
            self._file.metadata.row_group(i).num_rows for i in range(self._file.num_row_groups)
        ]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._bounds: np.ndarray | None = None

    @cached_property
    def identity(self) -> str:
        """A digest of this table (its size and Parquet footer): what seeds its cells' UUIDs.

        The footer holds every row group's offsets, sizes and column statistics, so two
        tables of one slide (another segmenter, another run) differ, while the same
        file always gives the same UUIDs. Reads the footer only, whatever the table's size.
        """
        with open(self.path, "rb") as handle:
            handle.seek(-8, os.SEEK_END)
            tail = handle.read(8)
            length = int.from_bytes(tail[:4], "little")
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 8 - length))
            footer = handle.read(length)
        digest = hashlib.sha256(size.to_bytes(8, "little") + footer)
        return digest.hexdigest()[:32]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[CellBatch]:
        """Every row in order, decoded ``batch_rows`` at a time.

        Record batches smaller than a row group keep the decoded Arrow data, the
        Python ``bytes`` and the shapely geometries of one batch alive at a time.
        """
        start = 0
        for record in self._records(batch_rows, None):
            stop = start + record.num_rows
            yield CellBatch(record, self.measurement_columns, np.arange(start, stop))
            start = stop

    def _records(self, batch_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Record batches one row group at a time, decoded in this thread (flat memory)."""
        for group in range(self._file.num_row_groups):
            try:
                yield from self._file.iter_batches(
                    batch_size=batch_rows, row_groups=[group], columns=columns, use_threads=False
                )
            except (pa.ArrowInvalid, OSError) as exc:  # a changed byte in a data page
                raise CellTableError(
                    f"{self.path}: row group {group} cannot be read ({exc})",
                    hint="the table is damaged: sfc verify PROJECT --deep --repair redoes it",
                ) from exc

    def bounds(self) -> np.ndarray:
        """``(n, 4)`` float32 ``minx, miny, maxx, maxy`` of every nucleus (computed once)."""
        if self._bounds is None:
            parts = [
                shapely.bounds(
                    shapely.from_wkb(batch.column(GEOMETRY).to_numpy(zero_copy_only=False))
                ).astype(np.float32)
                for batch in self._records(BATCH_ROWS, [GEOMETRY])
            ]
            self._bounds = np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)
        return self._bounds

    def query(self, bbox: Sequence[float], *, limit: int = 5000) -> tuple[CellBatch, bool]:
        """Rows whose nucleus box meets ``bbox`` = ``(x0, y0, x1, y1)``; at most ``limit``.

        Returns the rows and whether more matched than ``limit``.
        """
        x0, y0, x1, y1 = (float(v) for v in bbox)
        b = self.bounds()
        hits = np.flatnonzero((b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0))
        truncated = len(hits) > limit
        hits = hits[:limit]
        groups = np.searchsorted(self._starts, hits, side="right") - 1
        pieces = []
        for group in np.unique(groups):
            local = hits[groups == group] - self._starts[group]
            pieces.append(self._file.read_row_group(int(group)).take(pa.array(local)))
        schema = self._file.schema_arrow
        table = pa.concat_tables(pieces) if pieces else schema.empty_table()
        return CellBatch(table, self.measurement_columns, hits), truncated


def cells_folder(store: str | os.PathLike[str]) -> Path:
    """Where a slide store's cell tables live: ``<id>.cells`` beside ``<id>.zarr``."""
    store = Path(store)
    return store.parent / f"{store.name.removesuffix('.zarr')}.cells"


def store_cell_table(store: str | os.PathLike[str], attrs: Mapping[str, Any]) -> Path | None:
    """The cell table of a slide store (from its ``cells`` part), or None when it has none.

    Raises
    ------
    CellTableError
        If the part names a table outside the store and its cells folder.
    """
    info = attrs.get("parts", {}).get(CELLS_PART)
    if not info or not info.get("complete"):
        return None
    root = Path(store).resolve()
    path = (root / str(info.get("table", DEFAULT_TABLE))).resolve()
    if not (path.is_relative_to(root) or path.is_relative_to(cells_folder(root))):
        raise CellTableError(
            f"{store}: the cells part points outside the store and its cells folder ({path})"
        )
    return path


class CellTableWriter:
    """Write a cell table in row groups (used by the cells stage, tests and benchmarks).

    Parameters
    ----------
    path
        Parquet file to write.
    measurements
        Measurement column names, in order.
    with_cells, with_classes
        Whether the ``cell_geometry`` and ``class`` columns exist.
    class_colors
        Optional ``{class: (r, g, b)}`` stored in the schema metadata.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        measurements: Sequence[str] = (),
        with_cells: bool = False,
        with_classes: bool = False,
        class_colors: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        fields = [pa.field(GEOMETRY, pa.binary(), nullable=False)]
        if with_cells:
            fields.append(pa.field(CELL_GEOMETRY, pa.binary()))
        if with_classes:
            fields.append(pa.field(CLASS, pa.string()))
        fields += [pa.field(name, pa.float32()) for name in measurements]
        metadata = {
            CLASS_COLORS_KEY: json.dumps({k: list(v) for k, v in (class_colors or {}).items()})
        }
        self.schema = pa.schema(fields, metadata=metadata)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, self.schema, write_page_checksum=True)

    def write(
        self,
        nuclei: Sequence[Any],
        *,
        cells: Sequence[Any] | None = None,
        classes: Sequence[str | None] | None = None,
        measurements: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append rows (shapely geometries, stored as WKB) in row groups of ``ROW_GROUP_ROWS``."""
        columns: dict[str, Any] = {GEOMETRY: shapely.to_wkb(np.asarray(nuclei, dtype=object))}
        if CELL_GEOMETRY in self.schema.names:
            if cells is None:
                raise ValueError("this table has a cell_geometry column: pass cells=")
            columns[CELL_GEOMETRY] = shapely.to_wkb(np.asarray(cells, dtype=object))
        if CLASS in self.schema.names:
            columns[CLASS] = list(classes) if classes is not None else [None] * len(nuclei)
        for field in self.schema:
            if field.name not in columns:
                columns[field.name] = np.asarray((measurements or {})[field.name], np.float32)
        self._writer.write_table(
            pa.table(columns, schema=self.schema), row_group_size=ROW_GROUP_ROWS
        )

    def close(self) -> None:
        """Finish the file."""
        self._writer.close()

    def __enter__(self) -> CellTableWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
