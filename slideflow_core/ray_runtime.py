"""Connecting to Ray: an existing cluster when given, else a local instance, started early.

The embedded default is one machine: when no address is given and no Ray is
running in this process, a local Ray instance is started with this machine's
cores. Starting one takes seconds (its processes, then its workers), so a
driver that knows it will need Ray calls :func:`start_ray` first: the start
goes on in a background thread while the driver resolves its cohort, imports
model code and plans, and :func:`ensure_ray` later waits only for what is left.
Ray is imported lazily so the core installs and imports without it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from slideflow_core.errors import SlideflowError

log = logging.getLogger(__name__)

#: The thread that started Ray in the background (:func:`start_ray`), if any; set once done.
_starting: threading.Thread | None = None
_started = threading.Event()
_start_error: BaseException | None = None
_lock = threading.Lock()


def _in_progress() -> bool:
    return _starting is not None and not _started.is_set()


def ray_initialized() -> bool:
    """Whether this process is connected to Ray (without importing it when it is not)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


class _NoThreadWarning(logging.Filter):
    """Drops Ray's warning that a background ``ray.init`` sets no SIGTERM handler (we do)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _exit_on_sigterm() -> None:
    """Exit cleanly on SIGTERM (Ray shuts its processes down at exit), as ``ray.init`` does
    when it runs in the main thread; a handler already installed is kept."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise SlideflowError(
            "Ray is not installed", hint="pip install 'slideflow-core[tiling]'"
        ) from exc
    return ray


def _target(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``$RAY_ADDRESS``, else ``None`` (a local one)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def starts_local_instance(address: str | None = None) -> bool:
    """Whether :func:`ensure_ray` would start a new local instance (nothing to join or reuse).

    True when no address is given, ``$RAY_ADDRESS`` is unset, and this process
    has no Ray yet (initialised or being started).
    """
    return _target(address) is None and not _in_progress() and not ray_initialized()


def local_resources(num_cpus: int | None = None) -> dict[str, float]:
    """What a new local instance would offer: ``{"CPU": n, "GPU": m}``, without starting it.

    GPUs are the NVIDIA devices the driver lists (``/proc/driver/nvidia/gpus``),
    limited by ``$CUDA_VISIBLE_DEVICES``, as Ray counts them.
    """
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    gpus = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = min(gpus, len([d for d in visible.split(",") if d.strip()]))
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(gpus)}


def _init(address: str | None, num_cpus: int | None) -> None:
    ray = _import_ray()
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local tests: no token prompts
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    address = _target(address)
    if address is None:
        kwargs.update(
            address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False
        )
        log.info("starting a local Ray instance with %s CPUs", kwargs["num_cpus"])
    else:
        kwargs["address"] = address
    ray.init(**kwargs)


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Begin connecting to (or starting) Ray in a background thread, and return at once.

    The same arguments as :func:`ensure_ray`, which waits for this start to end
    (and raises its error, if it failed). A second call while a start is under
    way, or once Ray is up, does nothing. Only a new local instance (5-8 s) is
    started in the background: joining a running cluster (``address`` or
    ``$RAY_ADDRESS``, as inside a Ray job) is left to :func:`ensure_ray`, in the
    caller's thread, once the caller's imports are done (a Ray job's driver that
    imported torch while ``ray.init`` ran beside it failed in torch's import).
    """
    global _starting, _start_error
    _import_ray()  # a missing Ray is said at once, in the caller's thread
    with _lock:
        if _in_progress() or ray_initialized() or _target(address) is not None:
            return

        def run() -> None:
            global _start_error
            try:
                _init(address, num_cpus)
            except BaseException as exc:  # handed to ensure_ray, which raises it
                _start_error = exc
            finally:
                _started.set()
            # Ray's processes die with the *thread* that spawned them (Linux's parent-death
            # signal follows the thread): this one lives as long as the process.
            threading.Event().wait()

        logging.getLogger("ray._private.worker").addFilter(_NoThreadWarning())
        _start_error = None
        _started.clear()
        _starting = threading.Thread(target=run, name="sfc-ray-start", daemon=True)
        _starting.start()
        if threading.current_thread() is threading.main_thread():
            _exit_on_sigterm()


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

    A start begun by :func:`start_ray` is waited for, not repeated.
    """
    ray = _import_ray()
    if _starting is not None:
        _started.wait()
        if _start_error is not None and not ray.is_initialized():
            raise _start_error
    if not ray.is_initialized():
        _init(address, num_cpus)
    return ray


def wait_for_start() -> None:
    """Wait for a background start to end (its errors ignored): call before exiting.

    A process that ends while Ray is half started could leave its processes
    behind; once started, Ray shuts them down itself at exit.
    """
    if _starting is not None:
        _started.wait()
