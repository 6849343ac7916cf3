"""QuPath GeoJSON in and out: ROIs and labels in, tissue, tiles and cells out.

- :func:`read_geojson`, :func:`read_roi`, :func:`read_labels`: QuPath exports
  (annotations, detections, cells; polygons, multipolygons, holes, classes) as
  shapely geometries.
- :func:`export_store`, :func:`export_stores`: a slide store's tissue, tiles
  (QC values, MIL scores) and cells streamed to ``.geojson``/``.geojson.gz``.
- The export stage (``create_stage("export", ...)``, :mod:`.stage`): every store
  of a project to ``exports/`` through the core runner, resumable.
- :class:`GeoJSONWriter` and the builders in :mod:`.objects` for other sources.
- :class:`CellTable`: the cells stage's Parquet table (schema in :mod:`.cells`).
"""

from __future__ import annotations

from slideflow_core.geojson.cells import CellTable, CellTableError, CellTableWriter
from slideflow_core.geojson.export import (
    ExportOptions,
    ExportSummary,
    export_store,
    export_stores,
    find_stores,
)
from slideflow_core.geojson.objects import (
    Classification,
    GeoJSONEncodeError,
    GeometryStats,
    IdSource,
    annotation_features,
    cell_features,
    clean_polygons,
    origin_offset,
    tile_features,
)
from slideflow_core.geojson.overlays import StoreOverlays
from slideflow_core.geojson.read import (
    GeoFeature,
    GeoJSONError,
    iter_geojson,
    polygons_of,
    read_geojson,
    read_labels,
    read_roi,
)
from slideflow_core.geojson.write import GeoJSONWriter

__all__ = [
    "CellTable",
    "CellTableError",
    "CellTableWriter",
    "Classification",
    "ExportOptions",
    "ExportSummary",
    "GeoFeature",
    "GeoJSONEncodeError",
    "GeoJSONError",
    "GeoJSONWriter",
    "GeometryStats",
    "IdSource",
    "StoreOverlays",
    "annotation_features",
    "cell_features",
    "clean_polygons",
    "export_store",
    "export_stores",
    "find_stores",
    "iter_geojson",
    "origin_offset",
    "polygons_of",
    "read_geojson",
    "read_labels",
    "read_roi",
    "tile_features",
]
