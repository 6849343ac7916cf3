"""Concurrent writers of one store: no marker is lost, and one part has one writer."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from slideflow_core.store import (
    StoreError,
    commit_store,
    mark_part,
    part_state,
    read_store_attrs,
    start_store,
    unmark_part,
    write_part,
)

pytestmark = pytest.mark.fault

CALLS = 150


def _writer(store: str, prefix: str, forget: int, start) -> None:
    start.wait()
    for i in range(CALLS):
        mark_part(store, f"{prefix}/{i}", {"identity": {"i": i}})
    for i in range(forget):
        unmark_part(store, f"{prefix}/{i}")


def test_two_processes_keep_every_marker(tmp_path):
    store = tmp_path / "s1.zarr"
    commit_store(start_store(store, {"slide_id": "s1"}), store)
    context = multiprocessing.get_context("spawn")  # zarr runs an event-loop thread: no fork
    start = context.Event()
    writers = [
        context.Process(target=_writer, args=(str(store), "a", 0, start)),
        context.Process(target=_writer, args=(str(store), "b", CALLS // 2, start)),
    ]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(timeout=300)
        assert writer.exitcode == 0
    parts = read_store_attrs(store)["parts"]
    expected = {f"a/{i}" for i in range(CALLS)} | {f"b/{i}" for i in range(CALLS // 2, CALLS)}
    assert set(parts) == expected
    assert all(parts[name]["complete"] for name in expected)
    assert (tmp_path / ".s1.zarr.lock").is_file()  # beside the store, not inside it
    assert not (store / ".s1.zarr.lock").exists()


def test_a_second_writer_of_one_part_is_refused_at_once_and_the_first_commits(tmp_path):
    store = tmp_path / "s1.zarr"
    commit_store(start_store(store, {"slide_id": "s1"}), store)
    with write_part(store, "features/m", {"identity": {"run": 1}}) as group:
        group.create_array("x", data=np.arange(3))
        with (
            pytest.raises(StoreError, match="another process is writing part 'features/m'"),
            write_part(store, "features/m", {"identity": {"run": 2}}),
        ):
            pass
        with write_part(store, "features/other", {"identity": {}}) as other:
            other.create_array("x", data=np.arange(2))  # other parts are not held up
    assert part_state(store, "features/m", {"run": 1}) == "complete"
    assert part_state(store, "features/other", {}) == "complete"
    assert (tmp_path / ".s1.zarr.features~m.lock").is_file()
