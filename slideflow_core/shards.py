"""Writing a Zarr v3 shard from chunks that are already encoded (no decode, no re-encode).

A tile copied straight out of a slide is already the bytes the array's
array-to-bytes codec would produce, so the shard is assembled as the sharding
specification lays it out: each inner chunk's bytes followed by their CRC32C,
then the index (offset and length of every inner chunk, little-endian uint64,
``2**64 - 1`` for an absent chunk) and the index's own CRC32C. Zarr reads the
result like any shard it wrote itself; only the layout ``create_array`` gives a
checksummed sharded array (inner codecs ``[<array-to-bytes>, crc32c]``, index
``[bytes, crc32c]`` at the end) is accepted.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.storage import LocalStore

from slideflow_core.manifest import bytes_checksum

_ABSENT = np.uint64(2**64 - 1)
#: Buffers per ``writev`` call (the usual ``IOV_MAX``).
_IOV_MAX = 1024


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return google_crc32c.value(data).to_bytes(4, "little")


def _sharding(array: zarr.Array) -> ShardingCodec:
    codecs = array.metadata.codecs  # type: ignore[union-attr]
    sharding = codecs[0] if len(codecs) == 1 else None
    if not isinstance(sharding, ShardingCodec):
        raise ValueError(f"{array.path} is not a sharded array with one sharding codec")
    inner_ok = len(sharding.codecs) == 2 and isinstance(sharding.codecs[1], Crc32cCodec)
    index_ok = [type(c) for c in sharding.index_codecs] == [BytesCodec, Crc32cCodec]
    if not (inner_ok and index_ok and sharding.index_location.value == "end"):
        raise ValueError(f"{array.path}: shard layout is not [codec, crc32c] with an end index")
    return sharding


def write_encoded_shard(
    array: zarr.Array, shard: Sequence[int], chunks: Sequence[bytes | None]
) -> tuple[str, int, str]:
    """Write shard ``shard`` (its grid position) of ``array`` from encoded inner chunks.

    Parameters
    ----------
    array
        A sharded array opened for writing.
    shard
        Position of the shard in the shard grid (e.g. ``(i, 0, 0, 0)``).
    chunks
        The shard's inner chunks in C order, each as its array-to-bytes codec
        encodes it (e.g. a complete JPEG stream), or None for an absent chunk.

    Returns
    -------
    tuple of (str, int, str)
        The shard file's key under the store root, its size and its manifest
        checksum (:func:`~slideflow_core.manifest.bytes_checksum`), for the
        part's manifest.

    Raises
    ------
    ValueError
        If the array's layout is not the checksummed sharded one, or the number
        of chunks does not match the shard.
    """
    sharding = _sharding(array)
    per_shard = tuple(s // c for s, c in zip(array.shards, sharding.chunk_shape, strict=True))
    if len(chunks) != int(np.prod(per_shard)):
        raise ValueError(
            f"a shard of {array.path} holds {np.prod(per_shard)} chunks, not {len(chunks)}"
        )
    index = np.full((len(chunks), 2), _ABSENT, dtype="<u8")
    parts: list[bytes] = []
    offset = 0
    for i, chunk in enumerate(chunks):
        if chunk is None:
            continue
        parts += [chunk, _crc32c(chunk)]
        index[i] = (offset, len(chunk) + 4)
        offset += len(chunk) + 4
    index_bytes = index.tobytes()
    parts += [index_bytes, _crc32c(index_bytes)]
    key = array.metadata.encode_chunk_key(tuple(shard))
    size = offset + len(index_bytes) + 4
    store = array.store_path.store
    if isinstance(store, LocalStore):
        _write_file(Path(store.root) / array.store_path.path / key, parts)
    else:
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        buffer = default_buffer_prototype().buffer.from_bytes(b"".join(parts))
        sync((array.store_path / key).set(buffer))
    return posixpath.join(array.path, key), size, bytes_checksum(parts)


def _write_file(path: Path, parts: list[bytes]) -> None:
    """Write ``parts`` as one file with a few ``writev`` calls (no joined copy, GIL released).

    Not atomic: a shard is written into a partial store, which only a complete,
    checked part turns into a committed one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        views = [memoryview(part) for part in parts if part]
        while views:
            written = os.writev(fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]
    finally:
        os.close(fd)


def read_encoded_chunks(array: zarr.Array, rows: np.ndarray) -> list[bytes]:
    """The encoded inner chunks of ``rows`` of a local sharded array, CRC32C-checked.

    The reverse of :func:`write_encoded_shard` for arrays chunked one row per
    chunk along their first axis (a tile per chunk): per shard, one read of its
    index and one of the span of the chunks wanted, with no trip through Zarr's
    codec pipeline, so a JPEG tile reaches its decoder as the bytes it was
    stored as.

    Parameters
    ----------
    array
        A sharded array in a :class:`~zarr.storage.LocalStore`, chunks of one row.
    rows
        Row indices, in any order (repeats allowed).

    Returns
    -------
    list of bytes
        Each row's chunk without its checksum, in the order of ``rows``.

    Raises
    ------
    ValueError
        If the layout is not the checksummed one, or the array is not local with
        one row per chunk.
    OSError
        If a shard is missing or truncated, an index or chunk fails its CRC32C,
        or a row has no chunk (a hole Zarr would fill with the fill value).
    """
    if not rows_readable(array):
        raise ValueError(f"{array.path}: not a local checksummed array of one row per chunk")
    store = array.store_path.store
    per_shard = int(array.shards[0])
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    ascending = rows[order]
    ordered: list[bytes] = []
    zeros = (0,) * (array.ndim - 1)
    for shard in np.unique(ascending // per_shard).tolist():
        key = array.metadata.encode_chunk_key((shard, *zeros))
        path = Path(store.root) / array.store_path.path / key
        wanted = ascending[ascending // per_shard == shard] - shard * per_shard
        ordered += _shard_chunks(path, per_shard, wanted)
    out: list[bytes] = [b""] * len(rows)
    for position, chunk in zip(order.tolist(), ordered, strict=True):
        out[position] = chunk
    return out


def rows_readable(array: zarr.Array) -> bool:
    """Whether :func:`read_encoded_chunks` reads ``array``: local, checksummed shards of
    one row per chunk along the first axis only."""
    try:
        sharding = _sharding(array)
    except ValueError:
        return False
    shape = sharding.chunk_shape
    return (
        isinstance(array.store_path.store, LocalStore)
        and shape[0] == 1
        and tuple(shape[1:]) == tuple(array.shape[1:])
        and tuple(array.shards[1:]) == tuple(array.shape[1:])
    )


def _shard_chunks(path: Path, per_shard: int, wanted: np.ndarray) -> list[bytes]:
    """Chunks ``wanted`` (positions in the shard, ascending) of the shard file at ``path``."""
    index_bytes = per_shard * 16
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < index_bytes + 4:
            raise OSError(f"{path}: shard is truncated ({size} bytes)")
        tail = os.pread(handle.fileno(), index_bytes + 4, size - index_bytes - 4)
        if _crc32c(tail[:-4]) != tail[-4:]:
            raise OSError(f"{path}: shard index fails its CRC32C")
        index = np.frombuffer(tail[:-4], "<u8").reshape(per_shard, 2)[wanted]
        if (index[:, 0] == _ABSENT).any():
            raise OSError(f"{path}: shard lacks chunks it should hold")
        index = index.astype(np.int64)
        first, end = int(index[:, 0].min()), int(index.sum(axis=1).max())
        if end > size - index_bytes - 4:
            raise OSError(f"{path}: shard index points past its data")
        span = os.pread(handle.fileno(), end - first, first)
    chunks = []
    for offset, length in (index - (first, 0)).tolist():
        chunk = span[offset : offset + length - 4]
        if _crc32c(chunk) != span[offset + length - 4 : offset + length]:
            raise OSError(f"{path}: a chunk fails its CRC32C")
        chunks.append(chunk)
    return chunks
