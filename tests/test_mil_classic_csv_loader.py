"""Any file of the classical MIL format loads: header bag_id,label,f0…fN, one row per instance."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from mil.data import read_mil_csv
from mil.errors import MILError


def test_musk1_loads_with_its_documented_shape(shared_data):
    table = read_mil_csv(shared_data / "mil" / "musk1.csv.gz")
    assert len(table) == 92 and table.dim == 166
    assert sum(table.size(i) for i in range(len(table))) == 476
    assert sorted(set(table.labels)) == [0, 1] and table.labels.count(1) == 47


def test_any_file_of_the_format_loads_with_its_own_feature_count(tmp_path):
    path = tmp_path / "toy.csv.gz"
    rows = ["bag_id,label,f0,f1,f2", "7,1,1,2,3", "7,1,4,5,6", "3,0,0,0,1"]
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(rows) + "\n")
    table = read_mil_csv(path)
    assert table.ids == ("7", "3") and table.labels == (1, 0) and table.dim == 3
    np.testing.assert_array_equal(table.features(0), [[1, 2, 3], [4, 5, 6]])
    assert table.source == str(path)


def test_bad_files_are_explained(tmp_path):
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("id,y,f0\n1,0,1\n")
    with pytest.raises(MILError, match="bag_id,label"):
        read_mil_csv(bad_header)
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("bag_id,label,f0\n1,0,1\n1,1,2\n")
    with pytest.raises(MILError, match="more than one label"):
        read_mil_csv(mixed)
