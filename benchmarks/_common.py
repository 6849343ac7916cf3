"""Helpers shared by the benchmarks: timing, peak memory, tables and JSON output."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process image so far, in MiB.

    Linux's ``VmHWM`` when available: ``ru_maxrss`` survives ``exec`` and would
    report the (larger) parent that started a measuring subprocess.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    if line is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return int(line.split()[1]) / 1024.0


def timed(fn: Callable[[], Any], *, repeat: int = 1) -> float:
    """Best wall-clock seconds of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as an aligned text table with the given columns."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 1e5 else f"{value:,.0f}"
        return str(value)

    table = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def write_json(name: str, payload: dict[str, Any], out: str | None = None) -> Path:
    """Write results with machine facts to ``out`` or ``benchmarks/results/<name>.json``."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def default_data_dir() -> Path:
    """``../shared/data/slides`` beside the repository."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
