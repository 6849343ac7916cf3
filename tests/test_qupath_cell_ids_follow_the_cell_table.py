"""Cell feature UUIDs are seeded by the cell table: QuPath never merges two tables' cells.

QuPath keys imported objects by their ``id``; two segmentations of one slide exported with
the same UUIDs would replace each other's objects on import. The same table exported
again (or a copy of it) keeps its UUIDs, so a re-import updates rather than duplicates.
"""

from __future__ import annotations

import gzip
import json
import shutil

from overlay_stores import cell_rows, make_store

from slideflow_core.geojson import CellTableWriter, export_store


def _write_table(path, seed: int):
    nuclei, cells, classes, measurements = cell_rows(40, seed=seed)
    with CellTableWriter(
        path, measurements=list(measurements), with_cells=True, with_classes=True
    ) as writer:
        writer.write(nuclei, cells=cells, classes=classes, measurements=measurements)
    return path


def _cell_ids(store, table, out) -> list[str]:
    export_store(store, out, what=("cells",), cells_table=str(table))
    with gzip.open(out, "rt") if out.suffix == ".gz" else open(out) as handle:
        return [feature["id"] for feature in json.load(handle)["features"]]


def test_two_tables_of_one_slide_get_different_ids_and_a_copy_the_same(tmp_path):
    store = make_store(tmp_path, run=None)
    first = _write_table(tmp_path / "a.parquet", seed=1)
    second = _write_table(tmp_path / "b.parquet", seed=2)
    copy = tmp_path / "elsewhere" / "a.parquet"
    copy.parent.mkdir()
    shutil.copy(first, copy)

    ids_first = _cell_ids(store, first, tmp_path / "1.geojson")
    ids_second = _cell_ids(store, second, tmp_path / "2.geojson")
    assert len(ids_first) == len(ids_second) == 40
    assert not set(ids_first) & set(ids_second)
    assert _cell_ids(store, first, tmp_path / "1b.geojson") == ids_first
    assert _cell_ids(store, copy, tmp_path / "3.geojson") == ids_first


def test_the_store_cell_table_exports_stable_ids(tmp_path):
    store = make_store(tmp_path, run=None, cells=30)
    table = store / "cells" / "cells.parquet"
    ids = _cell_ids(store, table, tmp_path / "a.geojson")
    export_store(store, tmp_path / "b.geojson", what=("cells",))
    with open(tmp_path / "b.geojson") as handle:
        assert [f["id"] for f in json.load(handle)["features"]] == ids
