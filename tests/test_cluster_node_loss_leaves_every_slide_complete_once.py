"""A worker node dies while slides are in flight: every slide still ends complete, once.

A real multi-node Ray cluster in one machine (``ray.cluster_utils.Cluster``): a
head with no CPUs (it only runs the driver) and two one-CPU worker nodes. When
the first slide is done, one worker node is removed with its running tasks;
Ray retries them on the other node and the atomic per-slide commits keep every
store whole.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from cluster_fixtures import TILING, assert_complete_once, private_ray, write_manifest

import cluster

pytestmark = pytest.mark.integration


def _remove_after_first_slide(
    status: Path, remove, removed: list[int], stop: threading.Event
) -> None:
    while not stop.is_set():
        done = [p for p in status.glob("*.json") if json.loads(p.read_text())["status"] == "done"]
        if done:
            removed.append(len(done))
            remove()
            return
        time.sleep(0.05)


def test_removing_a_worker_node_mid_run_loses_no_slide(synthetic_slide, tmp_path):
    from ray.cluster_utils import Cluster

    slide, _ = synthetic_slide
    manifest = tmp_path / "manifest.csv"
    ids = write_manifest(manifest, str(slide), 6)
    config = cluster.PipelineConfig(run_dir=str(tmp_path / "run"), settings={"tile": TILING})
    with private_ray():
        # Ray maps 127.0.0.1 to this machine's own address for drivers, so the
        # nodes use that (every process stays on this machine).
        nodes = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        try:
            workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
            nodes.wait_for_nodes()
            removed: list[int] = []
            stop = threading.Event()
            watcher = threading.Thread(
                target=_remove_after_first_slide,
                args=(tmp_path / "run" / "status" / "tile", lambda: nodes.remove_node(workers[1]),
                      removed, stop),
                daemon=True,
            )  # fmt: skip
            watcher.start()
            try:
                report = cluster.run(manifest, config, address=nodes.address, progress=False)
            finally:
                stop.set()
                watcher.join()
        finally:
            import ray

            ray.shutdown()  # the driver leaves before the nodes go
            nodes.shutdown()

    assert removed and removed[0] < len(ids), "the node was not removed while slides were in flight"
    assert report.ok, str(report)
    tile = report.stages[0]
    assert (tile.done, tile.failed) == (len(ids), 0)
    assert [o.status for o in report.states.outcomes("tile")] == ["done"] * len(ids)
    assert_complete_once(tmp_path / "run" / "stores", ids)
