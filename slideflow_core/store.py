"""Per-slide Zarr stores: one store carries a slide's whole journey.

A store at ``<project>/stores/<slide_id>.zarr`` holds parts written by the
stages (``tiles``/``coords``/``qc`` from tiling, ``features/<model>``,
``attention/<run>``, ``cells``). Each part is written under a temporary name
and committed by an atomic rename, then described in the root attributes
under ``parts``; a crashed run therefore never leaves a part that looks
complete, and a resumed run reuses a part only when its recorded identity
(the config that shaped it) matches.

A part's marker also lists the files it wrote, with sizes and checksums (see
:mod:`slideflow_core.manifest`), and new arrays carry a CRC32C per chunk. A part
whose files are missing or truncated is ``"corrupt"`` to :func:`part_state` (so a
rerun redoes it), and readers raise :class:`StoreCorruptError` naming the chunk
instead of serving Zarr's fill values for the hole. Markers are updated under
an advisory file lock (``.<slide_id>.zarr.lock`` beside the store), so
concurrent writers of one store never lose each other's markers, and a part
added with :func:`write_part` has one writer at a time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from slideflow_core.cohort.records import is_uri
from slideflow_core.errors import SlideflowError
from slideflow_core.manifest import FileProblems, build_manifest, check_manifest
from slideflow_core.zarr_metadata import consolidate, drop_consolidated

try:
    import fcntl
except ImportError:  # not POSIX: markers are written without a lock
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
STORE_KIND = "slideflow-core slide store"
PARTIAL_SUFFIX = ".partial"
#: Key of a part's marker that holds the manifest of the files it wrote.
MANIFEST = "manifest"


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
        # Arrays of our JPEG tile codec go through zarr-python's pipeline, as zarrs
        # says on every open: expected, so not shown.
        warnings.filterwarnings(
            "ignore", "Array is unsupported by ZarrsCodecPipeline: codec slideflow_core"
        )
        return "zarrs"
    return "python"


class StoreError(SlideflowError):
    """A store is missing, incomplete, from another schema, or incompatible."""


class StoreCorruptError(StoreError):
    """A store's files are not what was written: a chunk is missing, truncated or changed.

    Attributes
    ----------
    store
        The store.
    part
        The part the damaged file belongs to (``None``: the root metadata).
    chunk
        The damaged file, relative to the store (e.g. ``tiles/c/2/0/0/0``).
    """

    def __init__(
        self,
        message: str,
        *,
        store: str | os.PathLike[str],
        part: str | None,
        chunk: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.store = os.fspath(store)
        self.part = part
        self.chunk = chunk


def checksummed(*codecs: Any) -> tuple[Any, ...]:
    """``codecs`` (compressors) followed by a CRC32C, so Zarr refuses a changed chunk.

    Pass the result as ``compressors=`` of ``create_array``; a sharded array
    checks every inner chunk (every tile) on read.
    """
    from zarr.codecs import Crc32cCodec

    return (*codecs, Crc32cCodec())


def default_codecs() -> tuple[Any, ...]:
    """Zarr's default compressor (Zstandard, level 0) with a CRC32C per chunk."""
    from zarr.codecs import ZstdCodec

    return checksummed(ZstdCodec(level=0))


def partial_path(final: str | os.PathLike[str]) -> Path:
    """Where a store is built before it is committed to ``final``."""
    final = Path(final)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, whatever state it is in."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def start_store(final: str | os.PathLike[str], attrs: dict[str, Any]) -> Path:
    """Create an empty store at the partial path of ``final`` (clearing a stale one).

    A stale partial store (an interrupted run) and stores left aside by an
    interrupted :func:`commit_store` are removed. Returns the partial path;
    write parts there, then :func:`commit_store`.
    """
    use_fast_codecs()
    final = Path(final)
    partial = partial_path(final)
    _remove(partial)
    for trash in final.parent.glob(f".{final.name}.old-*"):
        _remove(trash)
    partial.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(partial), mode="w")
    # One metadata write (``attrs.update`` would rewrite zarr.json once per key).
    group.update_attributes(
        {"kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "parts": {}, **attrs}
    )
    return partial


@contextmanager
def _store_lock(store: str | os.PathLike[str], part: str | None = None) -> Iterator[None]:
    """Hold an advisory lock of the store (its markers) or of one ``part`` (its writer).

    Lock files sit beside the store (``.<name>.zarr.lock`` for the markers,
    ``.<name>.zarr.<part>.lock`` for a part, ``/`` written ``~``), shared by the
    partial store, so they survive :func:`commit_store` swapping the folder.
    The marker lock waits (it is held for one rewrite of ``zarr.json``); a part
    lock held by another process is a :class:`StoreError` at once (that part is
    being written elsewhere). Stores at a URL are not locked.
    """
    raw = os.fspath(store)
    if is_uri(raw) or fcntl is None:
        yield
        return
    path = Path(raw)
    if not path.is_dir():
        raise StoreError(f"no slide store at {path}")
    name = path.name.removesuffix(PARTIAL_SUFFIX)
    suffix = "" if part is None else "." + part.replace("/", "~")
    with open(path.parent / f".{name}{suffix}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if part is None else fcntl.LOCK_NB))
        except BlockingIOError:
            raise StoreError(
                f"another process is writing part {part!r} of {path}",
                hint="two runs of one stage are working on this slide: let the other finish, "
                "then rerun to pick up what is left",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_root(store: str | os.PathLike[str]) -> zarr.Group:
    """The store's root group for writing, after checking its metadata reads."""
    _root_attributes(store)
    return zarr.open_group(str(store), mode="r+")


def mark_part(
    store: str | os.PathLike[str],
    part: str,
    info: dict[str, Any],
    *,
    files: Iterable[str] | None = None,
    known: Mapping[str, tuple[int, str]] | None = None,
) -> None:
    """Record ``part`` as complete in the store's root attributes.

    Parameters
    ----------
    store
        The store (committed or partial).
    part
        The part's name.
    info
        Its description (with the ``identity`` :func:`part_state` compares).
    files
        Files or folders (relative to the store) that the part wrote: their
        manifest (sizes, checksums) is recorded so readers and :func:`part_state`
        can tell a damaged part from a complete one. Without ``files``, a part
        marked again keeps the manifest it had (a new description, same files).
    known
        Sizes and checksums of some of those files as their writers computed
        them (see :func:`~slideflow_core.manifest.build_manifest`).
    """
    manifest = build_manifest(store, files, known=known) if files is not None else None
    with _store_lock(store):
        group = _open_root(store)
        parts = dict(group.attrs.get("parts", {}))
        record = {**info, "complete": True}
        old = parts.get(part) or {}
        if manifest is not None:
            record[MANIFEST] = manifest
        elif MANIFEST not in record and MANIFEST in old:
            record[MANIFEST] = old[MANIFEST]
        parts[part] = record
        group.attrs["parts"] = parts
        _keep_backup(store, group)
        _consolidate(store)


def unmark_part(store: str | os.PathLike[str], part: str) -> None:
    """Forget ``part`` in the root attributes (before it is rewritten)."""
    with _store_lock(store):
        group = _open_root(store)
        parts = dict(group.attrs.get("parts", {}))
        if parts.pop(part, None) is not None:
            group.attrs["parts"] = parts
            _keep_backup(store, group)
            _consolidate(store)


def _consolidate(store: str | os.PathLike[str]) -> None:
    """Refresh the root's consolidated metadata (under the marker lock), or drop it.

    A part whose metadata no longer reads (damaged, being repaired) makes
    consolidation fail; the root then keeps no consolidated copy, so readers list
    the folders instead of trusting a stale one.
    """
    if is_uri(os.fspath(store)):
        return
    try:
        consolidate(store)
    except Exception:  # any unreadable node: fall back to no consolidated metadata
        drop_consolidated(store)


def backup_path(store: str | os.PathLike[str]) -> Path:
    """``.<slide_id>.zarr.attrs.json`` beside a store: a copy of its root attributes.

    Rewritten with every marker (under the marker lock), so when the root
    ``zarr.json`` is damaged, the slide's file and the config of every part it
    held are still known and ``sfc verify --repair`` can rebuild them.
    """
    path = Path(store)
    return path.parent / f".{path.name.removesuffix(PARTIAL_SUFFIX)}.attrs.json"


def read_backup(store: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The root attributes last recorded beside ``store``, or ``None`` (none, or unreadable)."""
    if is_uri(os.fspath(store)):
        return None
    try:
        attrs = json.loads(backup_path(store).read_text())
    except (OSError, ValueError):
        return None
    return attrs if isinstance(attrs, dict) else None


def _keep_backup(store: str | os.PathLike[str], group: zarr.Group) -> None:
    if is_uri(os.fspath(store)):
        return
    path = backup_path(store)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(group.attrs.asdict()))
    os.replace(tmp, path)


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
    store: str | os.PathLike[str],
    part: str,
    info: dict[str, Any],
    *,
    files: Iterable[str] = (),
) -> Iterator[zarr.Group]:
    """Write one part (e.g. ``features/uni``) of a committed store atomically.

    Yields an empty Zarr group at ``<part>.partial`` inside the store. When the
    block finishes, the group is renamed to ``<part>`` and recorded complete with
    ``info`` (which should hold the ``identity`` used by :func:`part_state`) and
    the manifest of every file under ``<part>`` (any file type). One process at
    a time writes a part: a second writer gets a :class:`StoreError` at once. If
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
    files
        Other files the part owns (relative to the store, e.g. a table kept beside
        it), in place when the block ends; the manifest covers them too.
    """
    use_fast_codecs()
    store = Path(store)
    read_store_attrs(store)
    names = part.split("/")
    part_key(*names)
    # Not through the consolidated copy: a group made since (a crashed or concurrent
    # writer of another part) exists on disk and must be found there.
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    parent = root
    for name in names[:-1]:
        parent = parent.require_group(name)
    final = store.joinpath(*names)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    with _store_lock(store, part):
        unmark_part(store, part)
        _remove(partial)
        group = zarr.open_group(str(partial), mode="w")
        try:
            yield group
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        commit_store(partial, final)
        mark_part(store, part, info, files=(part, *files))


def commit_store(partial: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Atomically move a finished store into place, replacing an older one.

    The old store (if any) is first renamed aside, so at every instant the
    final path holds either the old complete store or the new one.
    """
    partial, final = Path(partial), Path(final)
    trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists() or final.is_symlink():
        os.replace(final, trash)
    os.replace(partial, final)
    with suppress(OSError):  # else left for the next start_store of this slide
        _remove(trash)
    return final


def read_store_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Root attributes of a committed store.

    Raises
    ------
    StoreError
        If there is no store, or it is not a slideflow-core store of a known schema.
    StoreCorruptError
        If its root ``zarr.json`` is not readable JSON (truncated, overwritten).
    """
    attrs = _root_attributes(path)
    if attrs.get("kind") != STORE_KIND:
        raise StoreError(f"{path} is a Zarr store but not a slideflow-core slide store")
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {attrs.get('schema_version')}, "
            f"this code reads version {SCHEMA_VERSION}",
            hint="re-run the stage that wrote it with this version",
        )
    return attrs


def _root_attributes(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The attributes in a store's root ``zarr.json``; raises when absent or unreadable."""
    try:
        text = _root_metadata(path)
    except UnicodeDecodeError as exc:
        raise _unreadable_root(path, exc) from exc
    if text is None:
        interrupted = not is_uri(os.fspath(path)) and partial_path(path).exists()
        hint = "the run was interrupted; rerun to finish it" if interrupted else None
        raise StoreError(f"no slide store at {path}", hint=hint)
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _unreadable_root(path, exc) from exc
    attrs = document.get("attributes", {}) if isinstance(document, dict) else None
    if not isinstance(attrs, dict):
        raise _unreadable_root(path, ValueError("no attributes object"))
    return attrs


def _unreadable_root(path: str | os.PathLike[str], exc: Exception) -> StoreCorruptError:
    return StoreCorruptError(
        f"{os.fspath(path).rstrip('/')}/zarr.json is damaged ({exc}); "
        "the store's part markers cannot be read",
        store=path,
        part=None,
        chunk="zarr.json",
        hint="tile the slide again (sfc tile replaces a damaged store), "
        "then rerun the later stages",
    )


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
    """The state of ``part`` for a run with ``identity``: may it be reused?

    Returns
    -------
    str
        ``"complete"`` (reusable), ``"incompatible"`` (made with another
        config), ``"missing"``, or ``"corrupt"``: marked complete but a file it
        wrote is missing or of the wrong size, or the root metadata is
        unreadable (a rerun redoes it). Only local stores are checked for damage.
    """
    try:
        attrs = read_store_attrs(path)
    except StoreCorruptError:
        return "corrupt"
    except StoreError:
        return "missing"
    info = attrs.get("parts", {}).get(part)
    if not info or not info.get("complete"):
        return "missing"
    if info.get("identity") != _jsonable(identity):
        return "incompatible"
    problems = check_part(path, part, info)
    return "corrupt" if problems is not None and not problems.ok else "complete"


def part_complete(path: str | os.PathLike[str], part: str) -> bool:
    """Whether ``part`` is marked complete and its files check out, whatever its identity."""
    try:
        info = read_store_attrs(path).get("parts", {}).get(part)
    except StoreError:
        return False
    if not info or not info.get("complete"):
        return False
    problems = check_part(path, part, info)
    return problems is None or problems.ok


def check_part(
    store: str | os.PathLike[str],
    part: str,
    info: dict[str, Any] | None = None,
    *,
    deep: bool = False,
    keys: Iterable[str] | None = None,
) -> FileProblems | None:
    """Compare the files of ``part`` with the manifest recorded when it was committed.

    Parameters
    ----------
    store
        A local store.
    part
        The part.
    info
        Its marker, if already read (else read from the store).
    deep
        Recompute checksums too (reads every byte); else presence and sizes.
    keys
        Check only these files (store-relative), e.g. the chunks a read touches.

    Returns
    -------
    FileProblems or None
        ``None`` when nothing can be checked: the part records no manifest
        (written before manifests existed), or the store is at a URL.
    """
    if is_uri(os.fspath(store)):
        return None
    if info is None:
        info = read_store_attrs(store).get("parts", {}).get(part) or {}
    manifest = info.get(MANIFEST)
    if not manifest:
        return None
    return check_manifest(store, manifest, deep=deep, keys=keys)


def corrupt_part_error(
    store: str | os.PathLike[str], part: str, problems: FileProblems
) -> StoreCorruptError:
    """The :class:`StoreCorruptError` naming the first damaged file of ``part``."""
    found = problems.first()
    assert found is not None, "no problem to report"
    key, what = found
    total = len(problems.missing) + len(problems.wrong_size) + len(problems.wrong_checksum)
    more = f" ({total - 1} more damaged files in this part)" if total > 1 else ""
    return StoreCorruptError(
        f"{os.fspath(store)}: file {key} of part {part!r} is {what}{more}",
        store=store,
        part=part,
        chunk=key,
        hint=f"rerun the stage that wrote {part!r}: a damaged part is redone "
        "(sfc verify PROJECT lists every damaged part)",
    )


def require_intact(
    store: str | os.PathLike[str],
    part: str,
    info: dict[str, Any],
    *,
    keys: Iterable[str] | None = None,
) -> None:
    """Raise :class:`StoreCorruptError` if a file of ``part`` (or of ``keys``) is gone or resized.

    One ``stat`` per file; parts without a manifest pass unchecked.
    """
    problems = check_part(store, part, info, keys=keys)
    if problems is not None and not problems.ok:
        raise corrupt_part_error(store, part, problems)


@contextmanager
def reading_part(
    store: str | os.PathLike[str],
    part: str,
    info: dict[str, Any],
    *,
    keys: Iterable[str] | None = None,
) -> Iterator[None]:
    """Guard a read of ``part``: refuse missing files, and name the damaged one if it fails.

    Before the block, the files in ``keys`` (default: all the part's files) are
    checked for presence and size. If the block raises (a chunk whose CRC32C
    or compressed stream is broken), their checksums are recomputed and a
    changed file becomes a :class:`StoreCorruptError`; other errors pass through.
    """
    keys = None if keys is None else list(keys)
    require_intact(store, part, info, keys=keys)
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        problems = check_part(store, part, info, deep=True, keys=keys)
        if problems is not None and not problems.ok:
            raise corrupt_part_error(store, part, problems) from exc
        raise


def chunk_keys(array: zarr.Array, path: str, rows: slice | np.ndarray | None = None) -> list[str]:
    """Store-relative files holding ``rows`` of a row-chunked array, and its metadata.

    Parameters
    ----------
    array
        The array (chunked, or sharded, along its first axis only).
    path
        Its path inside the store (e.g. ``"tiles"``).
    rows
        A slice or indices along the first axis; ``None`` for all rows.
    """
    per_file = int((array.shards or array.chunks)[0])
    if rows is None or isinstance(rows, slice):
        indices = np.arange(*(rows or slice(None)).indices(int(array.shape[0])))
    else:
        indices = np.asarray(rows, np.int64)
    files = np.unique(indices // per_file).tolist()
    zeros = (0,) * (array.ndim - 1)
    keys = [f"{path}/{array.metadata.encode_chunk_key((i, *zeros))}" for i in files]
    return [f"{path}/zarr.json", *keys]


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(value))
