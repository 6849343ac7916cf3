"""Slide stores on object storage (``s3://`` and any fsspec URL): upload and download.

Object stores have no atomic rename, so a store is uploaded data first and its
root ``zarr.json`` (which holds the ``parts[...]["complete"]`` markers) last:
until that final write lands, readers see the previous markers or no store at
all. A part that is being replaced is first unmarked remotely, so its old
marker never describes new, half-uploaded chunks. Readers
(:func:`slideflow_core.store.part_state` on the URL) trust only the markers.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

from slideflow_core.errors import SlideflowError
from slideflow_core.geojson.cells import cells_folder
from slideflow_core.store import PARTIAL_SUFFIX, StoreError, commit_store, read_store_attrs

ROOT_METADATA = "zarr.json"


class ObjectStoreError(SlideflowError):
    """Object storage could not be reached or written."""


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it.

    Credentials and endpoints come from the usual environment (``AWS_*``,
    ``AWS_ENDPOINT_URL`` for S3-compatible servers).

    Raises
    ------
    ObjectStoreError
        If the protocol's fsspec driver (``s3fs`` for ``s3://``) is not installed.
    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise ObjectStoreError(
            f"cannot open {url}: {exc}", hint="pip install 'slideflow-core[cluster]'"
        ) from exc
    return fs, path.rstrip("/")


def join(url: str, *names: str) -> str:
    """``url/name/...`` for a URL or a local path."""
    return "/".join([url.rstrip("/"), *names])


def store_parts(url: str) -> dict[str, Any]:
    """The part markers of the store at ``url`` or a local path (empty when there is none)."""
    try:
        return dict(read_store_attrs(url).get("parts", {}))
    except StoreError:
        return {}


def upload_store(local: str | os.PathLike[str], url: str) -> int:
    """Upload a committed local store to ``url``, root metadata last; returns files sent.

    Parts whose marker differs between the local and the remote store are
    unmarked remotely before any data is sent.
    """
    local = Path(local)
    read_store_attrs(local)  # only committed stores travel
    fs, root = filesystem(url)
    meta = json.loads((local / ROOT_METADATA).read_text())
    before = store_parts(url)
    changed = [p for p, info in before.items() if meta["attributes"]["parts"].get(p) != info]
    if changed:
        stale = json.loads(fs.cat_file(f"{root}/{ROOT_METADATA}"))
        for part in changed:
            stale["attributes"]["parts"].pop(part, None)
        fs.pipe_file(f"{root}/{ROOT_METADATA}", json.dumps(stale).encode())
    files = sorted(p for p in local.rglob("*") if p.is_file())
    # Cell tables live beside the store (<id>.cells/); they are data too, sent first.
    beside = cells_folder(local)
    files += sorted(
        p
        for p in beside.rglob("*")
        if p.is_file()
        and not any(n.endswith((".bands", ".partial")) for n in p.relative_to(beside).parts)
    )
    data = [p for p in files if p != local / ROOT_METADATA]
    if data:
        fs.put(
            [str(p) for p in data],
            [posixpath.normpath(f"{root}/{os.path.relpath(p, local)}") for p in data],
        )
    fs.put_file(str(local / ROOT_METADATA), f"{root}/{ROOT_METADATA}")  # the commit marker
    return len(files)


def download_store(url: str, local: str | os.PathLike[str]) -> bool:
    """Fetch the store at ``url`` into ``local`` (built aside, then renamed).

    Returns False, fetching nothing, when ``url`` holds no committed store.
    """
    try:
        read_store_attrs(url)
    except StoreError:
        return False
    fs, root = filesystem(url)
    local = Path(local)
    partial = local.with_name(local.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    remote_files = [f for f in fs.find(root) if f != f"{root}/{ROOT_METADATA}"]
    targets = [str(partial / f[len(root) + 1 :]) for f in remote_files]
    beside = posixpath.normpath(f"{root}/{os.path.relpath(cells_folder(local), local)}")
    if fs.exists(beside):  # cell tables kept beside the store
        extra = fs.find(beside)
        remote_files += extra
        targets += [str(cells_folder(local) / f[len(beside) + 1 :]) for f in extra]
    for target in targets:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    if remote_files:
        fs.get(remote_files, targets)
    # The marker is read after the data: a concurrent upload can only make it older.
    fs.get_file(f"{root}/{ROOT_METADATA}", str(partial / ROOT_METADATA))
    commit_store(partial, local)
    return True


def write_text(url: str, text: str) -> None:
    """Write a small text file at ``url`` (one PUT: whole or absent on object storage)."""
    write_bytes(url, text.encode())


def write_bytes(url: str, data: bytes) -> None:
    """Write a file at ``url`` in one PUT (whole or absent on object storage)."""
    fs, path = filesystem(url)
    fs.pipe_file(path, data)


def read_text(url: str) -> str | None:
    """The text at ``url``, or None when it does not exist."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path).decode()
    except FileNotFoundError:
        return None
