"""What a store part wrote: its files, their sizes and checksums.

A part records this manifest in its completion marker when it commits, so a
reader can tell a hole (a deleted or truncated chunk) from data: Zarr would
otherwise serve a missing chunk as fill values. The cheap check (presence and
sizes) is one ``stat`` per file; the deep check streams every file through
zlib's CRC32 (about 2 GB/s).

Why CRC32 and not CRC32C: new chunks already end in their own CRC32C (Zarr's
``crc32c`` codec, checked on every read), and the CRC32C of any block that ends
in its own CRC32C is one constant, so a CRC32C of such a file would not tell two
chunks apart. A CRC with another polynomial does.

A manifest is plain JSON::

    {"algorithm": "crc32", "files": {"tiles/c/0/0/0/0": [1234, "1a2b3c4d"], ...}}

with paths relative to the store root, in POSIX form. A store at a URL
(``s3://``) is checked through fsspec: one listing gives every size, and the
deep check streams each object.
"""

from __future__ import annotations

import os
import posixpath
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from slideflow_core.cohort.records import is_uri
from slideflow_core.parallel import ordered_map

_K = TypeVar("_K")
_BLOCK_BYTES = 1 << 20
#: Files checksummed at once: zlib's CRC and file reads release the GIL, so a store's
#: files are read on every core (and remote ones with several requests in flight).
_CHECKSUM_THREADS = min(8, os.cpu_count() or 1)
#: The checksum manifests record.
ALGORITHM = "crc32"


def file_checksum(path: str | os.PathLike[str]) -> str:
    """The CRC32 of one file as 8 hex digits, read in 1 MiB blocks."""
    with open(path, "rb") as handle:
        return _stream_checksum(handle)


def bytes_checksum(parts: Iterable[bytes | memoryview]) -> str:
    """The checksum :func:`file_checksum` gives a file holding ``parts`` one after another.

    A writer that has a file's bytes in hand records this instead of reading
    the file back (see ``known`` in :func:`build_manifest`).
    """
    crc = 0
    for part in parts:  # zlib releases the GIL on blocks of more than a few kB
        crc = zlib.crc32(part, crc)
    return f"{crc:08x}"


def _stream_checksum(handle: BinaryIO) -> str:
    return bytes_checksum(iter(lambda: handle.read(_BLOCK_BYTES), b""))


class _RemoteFiles:
    """Sizes and checksums of files under a URL, through fsspec.

    Many files are sized from one listing of the folder; a few (an export's
    files in a folder shared by every slide) one request each.
    """

    def __init__(self, url: str, *, listing: bool) -> None:
        import fsspec

        self.fs, base = fsspec.core.url_to_fs(url)
        self.base = base.rstrip("/")
        self._sizes: dict[str, int] | None = None if listing else {}
        self.listing = listing

    def size(self, key: str) -> int | None:
        if not self.listing or key.startswith("../"):  # "../": beside the folder listed
            try:
                return int(self.fs.info(self._path(key))["size"])
            except FileNotFoundError:
                return None
        if self._sizes is None:
            found = self.fs.find(self.base, detail=True)
            prefix = len(self.base) + 1
            self._sizes = {path[prefix:]: int(info["size"]) for path, info in found.items()}
        return self._sizes.get(key)

    def checksum(self, key: str) -> str:
        with self.fs.open(self._path(key), "rb") as handle:
            return _stream_checksum(handle)

    def _path(self, key: str) -> str:
        return posixpath.normpath(f"{self.base}/{key}")


class _LocalFiles:
    """Sizes and checksums of the files under a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            return None

    def checksum(self, key: str) -> str:
        return file_checksum(self.root / key)


def _files_under(root: Path, entry: str) -> Iterable[Path]:
    path = root / entry
    if path.is_file():
        yield path
    elif path.is_dir():
        for folder, _, names in os.walk(path):
            for name in names:
                yield Path(folder) / name


def build_manifest(
    root: str | os.PathLike[str],
    entries: Iterable[str],
    *,
    known: Mapping[str, tuple[int, str]] | None = None,
) -> dict[str, Any]:
    """The manifest of every file under ``entries`` (files or folders relative to ``root``).

    Entries that do not exist are skipped (an array whose chunks all equal the
    fill value has no chunk files). ``known`` gives ``(size, checksum)`` of files
    (relative POSIX paths) as their writers computed them from the bytes they
    wrote (:func:`bytes_checksum`); such a file is not read back when its size on
    disk is the recorded one, and is checksummed from disk otherwise.
    """
    root = Path(root)
    known = known or {}
    paths = [path for entry in entries for path in _files_under(root, entry)]
    names = [Path(os.path.relpath(path, root)).as_posix() for path in paths]
    sizes = [path.stat().st_size for path in paths]
    todo = [
        i
        for i, (name, size) in enumerate(zip(names, sizes, strict=True))
        if known.get(name, (None,))[0] != size
    ]
    sums = dict(zip(todo, _checksums(file_checksum, [paths[i] for i in todo]), strict=True))
    files = {
        # "../<id>.cells/...": a file beside the store
        name: [size, sums[i] if i in sums else known[name][1]]
        for i, (name, size) in enumerate(zip(names, sizes, strict=True))
    }
    return {"algorithm": ALGORITHM, "files": dict(sorted(files.items()))}


def _checksums(checksum: Callable[[_K], str], items: Sequence[_K]) -> list[str]:
    """``checksum`` of every item, on :data:`_CHECKSUM_THREADS` threads when there are several."""
    threads = min(_CHECKSUM_THREADS, len(items))
    return list(ordered_map(checksum, items, threads=threads if threads > 1 else 0))


@dataclass(frozen=True)
class FileProblems:
    """Files of a manifest that are not as recorded (paths relative to the store).

    Attributes
    ----------
    missing
        Listed files that are gone.
    wrong_size
        Files whose size differs from the recorded one (truncated or extended).
    wrong_checksum
        Files of the right size whose content changed (deep check only).
    checked
        How many files were checked.
    """

    missing: tuple[str, ...] = ()
    wrong_size: tuple[str, ...] = ()
    wrong_checksum: tuple[str, ...] = ()
    checked: int = 0

    @property
    def ok(self) -> bool:
        """Every checked file is as recorded."""
        return not (self.missing or self.wrong_size or self.wrong_checksum)

    def first(self) -> tuple[str, str] | None:
        """``(path, what is wrong)`` of the first problem, or ``None``."""
        for paths, what in (
            (self.missing, "missing"),
            (self.wrong_size, "of the wrong size (truncated?)"),
            (self.wrong_checksum, "changed since it was written (checksum mismatch)"),
        ):
            if paths:
                return paths[0], what
        return None


def check_manifest(
    root: str | os.PathLike[str],
    manifest: dict[str, Any],
    *,
    deep: bool = False,
    keys: Iterable[str] | None = None,
) -> FileProblems:
    """Compare the files under ``root`` with ``manifest``.

    Parameters
    ----------
    root
        The store: a local folder or a URL (``s3://bucket/project/stores/a.zarr``).
    manifest
        As made by :func:`build_manifest`.
    deep
        Also recompute every checksum (reads every byte); else presence and sizes only.
    keys
        Check only these files (those a read touches); keys the manifest does
        not list are ignored (chunks equal to the fill value are never written).
    """
    raw = os.fspath(root)
    files: dict[str, list[Any]] = manifest.get("files", {})
    wanted = files if keys is None else [k for k in keys if k in files]
    found = _RemoteFiles(raw, listing=len(wanted) > 8) if is_uri(raw) else _LocalFiles(raw)
    if deep and manifest.get("algorithm") != ALGORITHM:
        raise ValueError(f"unknown checksum {manifest.get('algorithm')!r} in a store manifest")
    missing, wrong_size, sized = [], [], []
    for key in wanted:
        actual = found.size(key)
        if actual is None:
            missing.append(key)
        elif actual != files[key][0]:
            wrong_size.append(key)
        else:
            sized.append(key)
    wrong_checksum = []
    if deep:
        sums = _checksums(found.checksum, sized)
        wrong_checksum = [k for k, crc in zip(sized, sums, strict=True) if crc != files[k][1]]
    return FileProblems(tuple(missing), tuple(wrong_size), tuple(wrong_checksum), len(wanted))
