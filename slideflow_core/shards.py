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

from collections.abc import Sequence

import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

_ABSENT = np.uint64(2**64 - 1)


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return np.uint32(google_crc32c.value(data)).tobytes()


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
) -> int:
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
    int
        Bytes written.

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
    data = b"".join(parts)
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    key = array.metadata.encode_chunk_key(tuple(shard))
    buffer = default_buffer_prototype().buffer.from_bytes(data)
    sync((array.store_path / key).set(buffer))
    return len(data)
