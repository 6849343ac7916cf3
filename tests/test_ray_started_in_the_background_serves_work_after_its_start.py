"""A Ray instance started in the background (while the driver does other work) is the one
the driver then uses, and it keeps serving work once its start is over.

Ray's processes die with the thread that spawned them, so a starting thread that ended
would take the instance down with it: a task sent afterwards would never run. The check
runs in a fresh interpreter, where no Ray is up yet.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import time
from slideflow_core.ray_runtime import ensure_ray, start_ray, starts_local_instance

assert starts_local_instance()
start_ray(num_cpus=1)
assert not starts_local_instance()  # being started: not started twice
ray = ensure_ray()
time.sleep(1)  # the start is long over
print("answer", ray.get(ray.remote(lambda: 41 + 1).remote()))
"""


def test_background_start_serves_tasks_after_it_ends():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to join
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answer 42" in done.stdout
    assert "SIGTERM handler is not set" not in done.stderr  # we set it, Ray need not warn
