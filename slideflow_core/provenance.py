"""Provenance records: what produced an output, from which input, with which code."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

_PACKAGES = ("slideflow-core", "numpy", "zarr", "openslide-python", "openslide-bin", "tiffslide")
_HEADER_BYTES = 1 << 20


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that shape our outputs."""
    out = {name: found for name in (*_PACKAGES, *extra) if (found := _version(name))}
    out["python"] = sys.version.split()[0]
    return out


@functools.cache
def _version(name: str) -> str | None:
    """One package's version, looked up once per process (reading its metadata takes
    about a millisecond, and every stored slide records a dozen)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def file_fingerprint(path: str) -> dict[str, Any]:
    """Size, modification time and SHA-256 of the first MiB of a file.

    Hashing the header (where TIFF/SVS keep their directory and metadata) is
    enough to tell two slides apart without reading gigabytes.
    """
    if "://" in path and not path.startswith("file://"):
        return {"path": path}
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_HEADER_BYTES))
    return {
        "path": os.path.abspath(path),
        "size_bytes": stat.st_size,
        "mtime": stat.st_mtime,
        "header_sha256": digest.hexdigest(),
        "header_bytes": min(stat.st_size, _HEADER_BYTES),
    }


def run_context() -> dict[str, Any]:
    """When and where something ran."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
