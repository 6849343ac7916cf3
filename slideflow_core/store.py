"""Per-slide Zarr stores: one store carries a slide's whole journey.

A store at ``<project>/stores/<slide_id>.zarr`` holds parts written by the
stages (``tiles``/``coords``/``qc`` from tiling, ``features/<model>``,
``attention/<run>``, ``cells``). Each part is written under a temporary name
and committed by an atomic rename, then described in the root attributes
under ``parts``; a crashed run therefore never leaves a part that looks
complete, and a resumed run reuses a part only when its recorded identity
(the config that shaped it) matches.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr

from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError

SCHEMA_VERSION = 1
STORE_KIND = "slideflow-core slide store"
PARTIAL_SUFFIX = ".partial"


def use_fast_codecs() -> str:
    """Use the Rust ``zarrs`` codec pipeline for Zarr I/O when it is installed.

    zarr-python spends about a millisecond of Python per chunk; per-tile chunks
    make that the main cost of writing a store, and ``zarrs`` removes most of it
    with identical on-disk results. Set ``SFC_ZARR_PIPELINE=python`` to keep
    zarr-python's own pipeline. Returns the pipeline in use.
    """
    wanted = os.environ.get("SFC_ZARR_PIPELINE", "auto")
    if wanted != "python" and importlib.util.find_spec("zarrs") is not None:
        zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
        return "zarrs"
    return "python"


class StoreError(SlideflowError):
    """A store is missing, incomplete, from another schema, or incompatible."""


def partial_path(final: str | os.PathLike[str]) -> Path:
    """Where a store is built before it is committed to ``final``."""
    final = Path(final)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def start_store(final: str | os.PathLike[str], attrs: dict[str, Any]) -> Path:
    """Create an empty store at the partial path of ``final`` (clearing a stale one).

    Returns the partial path; write parts there, then :func:`commit_store`.
    """
    use_fast_codecs()
    partial = partial_path(final)
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(partial), mode="w")
    group.attrs.update({"kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "parts": {}, **attrs})
    return partial


def mark_part(store: str | os.PathLike[str], part: str, info: dict[str, Any]) -> None:
    """Record ``part`` as complete in the store's root attributes."""
    group = zarr.open_group(str(store), mode="r+")
    parts = dict(group.attrs.get("parts", {}))
    parts[part] = {**info, "complete": True}
    group.attrs["parts"] = parts


def unmark_part(store: str | os.PathLike[str], part: str) -> None:
    """Forget ``part`` in the root attributes (before it is rewritten)."""
    group = zarr.open_group(str(store), mode="r+")
    parts = dict(group.attrs.get("parts", {}))
    if parts.pop(part, None) is not None:
        group.attrs["parts"] = parts


_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def part_key(*names: str) -> str:
    """The part path ``a/b`` for names such as ``("features", "uni")``, each checked.

    Raises
    ------
    StoreError
        If a name is empty, has a path separator or ``..``, or starts with a dot.
    """
    for name in names:
        if not _PART_NAME.match(name) or ".." in name or name.endswith(PARTIAL_SUFFIX):
            raise StoreError(
                f"{name!r} is not a valid store part name",
                hint="use letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
    return "/".join(names)


@contextmanager
def write_part(
    store: str | os.PathLike[str], part: str, info: dict[str, Any]
) -> Iterator[zarr.Group]:
    """Write one part (e.g. ``features/uni``) of a committed store atomically.

    Yields an empty Zarr group at ``<part>.partial`` inside the store. When the
    block finishes, the group is renamed to ``<part>`` and recorded complete with
    ``info`` (which should hold the ``identity`` used by :func:`part_state`). If
    the block raises, the partial group is removed and the part stays missing;
    a crash at any point leaves it missing or incomplete, never complete.

    Parameters
    ----------
    store
        A committed slide store.
    part
        Part path made with :func:`part_key`.
    info
        Description recorded in the root attributes under ``parts[part]``.
    """
    use_fast_codecs()
    store = Path(store)
    read_store_attrs(store)
    names = part.split("/")
    part_key(*names)
    root = zarr.open_group(str(store), mode="r+")
    parent = root
    for name in names[:-1]:
        parent = parent.require_group(name)
    unmark_part(store, part)
    final = store.joinpath(*names)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if partial.exists():
        shutil.rmtree(partial)
    group = zarr.open_group(str(partial), mode="w")
    try:
        yield group
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    commit_store(partial, final)
    mark_part(store, part, info)


def commit_store(partial: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Atomically move a finished store into place, replacing an older one.

    The old store (if any) is first renamed aside, so at every instant the
    final path holds either the old complete store or the new one.
    """
    partial, final = Path(partial), Path(final)
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, trash)
    os.replace(partial, final)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    return final


def read_store_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Root attributes of a committed store.

    Raises
    ------
    StoreError
        If there is no store, or it is not a slideflow-core store of a known schema.
    """
    text = _root_metadata(path)
    if text is None:
        interrupted = not is_uri(os.fspath(path)) and partial_path(path).exists()
        hint = "the run was interrupted; rerun to finish it" if interrupted else None
        raise StoreError(f"no slide store at {path}", hint=hint)
    attrs = json.loads(text).get("attributes", {})
    if attrs.get("kind") != STORE_KIND:
        raise StoreError(f"{path} is a Zarr store but not a slideflow-core slide store")
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {attrs.get('schema_version')}, "
            f"this code reads version {SCHEMA_VERSION}",
            hint="re-run the stage that wrote it with this version",
        )
    return attrs


def _root_metadata(path: str | os.PathLike[str]) -> str | None:
    """The root ``zarr.json`` of a store, local or at a URL (``s3://``, via fsspec), or None.

    On object storage a store is uploaded with its root ``zarr.json`` last, so
    the part markers in it are the only thing a reader may trust.
    """
    raw = os.fspath(path)
    if is_uri(raw):
        import fsspec

        fs, root = fsspec.core.url_to_fs(raw)
        try:
            return fs.cat_file(f"{root.rstrip('/')}/zarr.json").decode()
        except FileNotFoundError:
            return None
    meta = Path(raw) / "zarr.json"
    return meta.read_text() if meta.is_file() else None


def part_state(path: str | os.PathLike[str], part: str, identity: dict[str, Any]) -> str:
    """``"complete"`` (reusable), ``"incompatible"`` (other config) or ``"missing"``."""
    try:
        attrs = read_store_attrs(path)
    except StoreError:
        return "missing"
    info = attrs.get("parts", {}).get(part)
    if not info or not info.get("complete"):
        return "missing"
    return "complete" if info.get("identity") == _jsonable(identity) else "incompatible"


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))
