"""Connecting to Ray: an existing cluster when given, else a local instance.

The embedded default is one machine: when no address is given and no Ray is
running in this process, a local Ray instance is started with this machine's
cores. Ray is imported lazily so the core installs and imports without it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from slideflow_core.errors import SlideflowError

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Return the ``ray`` module, initialised.

    Parameters
    ----------
    address
        ``None``: reuse this process's Ray, connect to ``$RAY_ADDRESS`` when set
        (as inside a submitted Ray job), or else start a local instance: never a
        cluster that merely happens to run on this machine. ``"auto"`` or
        ``"ray://HOST:10001"`` / ``"HOST:6379"``: connect to that cluster.
    num_cpus
        Cores for a local instance (default: all of this machine's).
    """
    try:
        import ray
    except ImportError as exc:
        raise SlideflowError(
            "Ray is not installed", hint="pip install 'slideflow-core[tiling]'"
        ) from exc
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token prompts
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        kwargs.update(
            address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False
        )
        log.info("starting a local Ray instance with %s CPUs", kwargs["num_cpus"])
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return ray
