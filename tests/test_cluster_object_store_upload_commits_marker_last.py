"""Stores on object storage: data first, the root marker last; readers trust only the marker.

Uses fsspec's in-memory filesystem (a URL like ``s3://`` without a server); the
moto S3 server test runs the whole pipeline against real S3 calls.
"""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pytest
import zarr

from cluster.objectstore import download_store, store_parts, upload_store
from slideflow_core.store import commit_store, mark_part, part_state, start_store, write_part


def _store(path, value: float):
    partial = start_store(path, {"slide_id": "s1"})
    group = zarr.open_group(str(partial), mode="r+")
    group.create_array("coords", data=np.arange(8, dtype=np.int64).reshape(4, 2), chunks=(2, 2))
    mark_part(partial, "tiling", {"identity": {"mpp": 0.5}})
    commit_store(partial, path)
    with write_part(path, "features/m", {"identity": {"weights": value}}) as part:
        part.create_array("features", data=np.full((4, 3), value, np.float32), chunks=(2, 3))
    return path


@pytest.fixture
def url():
    base = f"memory://sfc-test-{uuid.uuid4().hex[:8]}/stores/s1.zarr"
    yield base
    fs, path = fsspec.core.url_to_fs(base)
    fs.rm(path.split("/")[0], recursive=True)


def test_crash_before_the_marker_leaves_no_complete_store(tmp_path, url, monkeypatch):
    local = _store(tmp_path / "s1.zarr", 1.0)
    fs, _ = fsspec.core.url_to_fs(url)
    real_put_file = type(fs).put_file

    def crash_on_marker(self, lpath, rpath, **kwargs):
        if rpath.endswith("s1.zarr/zarr.json"):
            raise ConnectionError("network lost before the marker")
        return real_put_file(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(type(fs), "put_file", crash_on_marker)
    with pytest.raises(ConnectionError):
        upload_store(local, url)
    assert fs.find(url), "the data was uploaded"
    assert part_state(url, "tiling", {"mpp": 0.5}) == "missing"  # no marker, no store
    monkeypatch.undo()

    assert upload_store(local, url) > 0
    assert part_state(url, "tiling", {"mpp": 0.5}) == "complete"
    assert part_state(url, "features/m", {"weights": 1.0}) == "complete"
    remote = zarr.open_group(zarr.storage.FsspecStore.from_url(url), mode="r")
    np.testing.assert_array_equal(remote["features/m/features"][:], np.full((4, 3), 1.0))


def test_a_replaced_part_is_unmarked_before_its_new_data_lands(tmp_path, url, monkeypatch):
    upload_store(_store(tmp_path / "a" / "s1.zarr", 1.0), url)
    newer = _store(tmp_path / "b" / "s1.zarr", 2.0)  # same tiling, other features
    fs, _ = fsspec.core.url_to_fs(url)
    seen: list[dict] = []
    real_put = type(fs).put

    def spy(self, lpath, rpath, **kwargs):
        seen.append(json.loads(fs.cat_file(f"{url}/zarr.json"))["attributes"]["parts"])
        return real_put(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(type(fs), "put", spy)
    upload_store(newer, url)
    assert seen, "data was uploaded"
    assert "features/m" not in seen[0]  # the old marker was gone before new chunks arrived
    assert "tiling" in seen[0]  # an unchanged part keeps its marker
    assert store_parts(url)["features/m"]["identity"] == {"weights": 2.0}


def test_download_rebuilds_an_identical_local_store(tmp_path, url):
    upload_store(_store(tmp_path / "a" / "s1.zarr", 3.0), url)
    local = tmp_path / "copy" / "s1.zarr"
    assert download_store(url, local)
    assert part_state(local, "features/m", {"weights": 3.0}) == "complete"
    group = zarr.open_group(str(local), mode="r")
    np.testing.assert_array_equal(group["coords"][:], np.arange(8).reshape(4, 2))
    assert not download_store(url.replace("s1.zarr", "none.zarr"), tmp_path / "none.zarr")
