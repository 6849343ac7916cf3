"""Ordered, bounded prefetching on threads: the pattern behind tile readers and loaders."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


#: How much lower background threads are scheduled (CFS weight about a tenth).
BACKGROUND_NICENESS = 10


def _lower_priority() -> None:
    """Lower the calling thread's priority; Linux schedules threads one by one, elsewhere
    a thread id is not a process id, so nothing is changed there."""
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, min(niceness, 19))


def ordered_map(
    fn: Callable[[_T], _R],
    items: Iterable[_T],
    *,
    threads: int,
    in_flight: int | None = None,
    name: str = "sfc-worker",
    background: bool = False,
) -> Iterator[_R]:
    """``map(fn, items)`` on a pool of ``threads`` threads, results in order, memory bounded.

    At most ``in_flight`` items (default ``2 * threads``) are submitted ahead of
    the consumer, so a slow consumer holds back the producers instead of letting
    results pile up, and a fast one finds the next result ready.

    Parameters
    ----------
    fn
        Work for one item; it must be thread-safe.
    items
        Consumed lazily.
    threads
        Pool size; ``0`` runs ``fn`` inline in the caller's thread (no prefetch).
    in_flight
        Results computed ahead of the consumer (at least 1).
    name
        Thread name prefix (shows in profilers and ``py-spy``).
    background
        Run the pool's threads at a lower scheduling priority (Linux: ``nice``
        +:data:`BACKGROUND_NICENESS` per thread), so they use the cores the
        consumer leaves idle instead of preempting it: a loader feeding a model
        whose threads fill every core no longer stalls them (an OpenMP region
        waits for its slowest thread).
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads == 0:
        yield from map(fn, items)
        return
    limit = max(1, in_flight if in_flight is not None else 2 * threads)
    initializer = _lower_priority if background else None
    with ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=initializer) as pool:
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a consumer that stops early (or an error) must not wait for queued work
            for future in pending:
                future.cancel()
