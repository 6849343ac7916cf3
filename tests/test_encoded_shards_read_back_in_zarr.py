"""Shards assembled from encoded chunks read back through Zarr, on disk and in any other store,
and are read back without Zarr's pipeline only as they were written: every damage is an error."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.storage import LocalStore, MemoryStore

from slideflow_core.manifest import file_checksum
from slideflow_core.shards import read_encoded_chunks, rows_readable, write_encoded_shard


def _array(store):
    return zarr.create_array(
        store,
        shape=(6, 4),
        dtype="<u2",
        chunks=(1, 4),
        shards=(4, 4),
        serializer=BytesCodec(endian="little"),
        compressors=Crc32cCodec(),
        fill_value=0,
    )


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_encoded_chunks_read_back_and_the_returned_record_is_the_files(kind, tmp_path):
    store = LocalStore(tmp_path / "a.zarr") if kind == "local" else MemoryStore()
    array = _array(store)
    values = np.arange(24, dtype="<u2").reshape(6, 4) * 1000
    rows = [row.tobytes() for row in values]
    key0, size0, crc0 = write_encoded_shard(array, (0, 0), rows[:4])
    key1, _, _ = write_encoded_shard(array, (1, 0), [*rows[4:], None, None])
    assert (key0, key1) == ("c/0/0", "c/1/0")
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], values)
    # 4 chunks of 8 bytes and their CRC32C, the 4 x 16-byte index and its CRC32C.
    assert size0 == 4 * (8 + 4) + 4 * 16 + 4
    if kind == "local":
        path = tmp_path / "a.zarr" / key0
        assert (path.stat().st_size, file_checksum(path)) == (size0, crc0)


def test_a_chunk_count_that_is_not_the_shards_is_refused(tmp_path):
    array = _array(LocalStore(tmp_path / "a.zarr"))
    with pytest.raises(ValueError, match="holds 4 chunks, not 3"):
        write_encoded_shard(array, (0, 0), [b"\0" * 8] * 3)


def _written(tmp_path):
    array = _array(LocalStore(tmp_path / "a.zarr"))
    values = np.arange(24, dtype="<u2").reshape(6, 4) * 1000
    rows = [row.tobytes() for row in values]
    write_encoded_shard(array, (0, 0), rows[:4])
    write_encoded_shard(array, (1, 0), [*rows[4:], None, None])
    return array, rows


def test_chunks_read_back_as_written_in_any_order_without_zarrs_pipeline(tmp_path):
    array, rows = _written(tmp_path)
    assert rows_readable(array) and not rows_readable(_array(MemoryStore()))
    for picks in ([0, 2, 3, 4, 5], [5, 0, 4, 2, 2], []):
        assert read_encoded_chunks(array, np.array(picks, int)) == [rows[i] for i in picks]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data.__setitem__(3, data[3] ^ 0x10), "a chunk fails its CRC32C"),
        (lambda data: data.__setitem__(len(data) - 9, data[-9] ^ 0x10), "index fails"),
        (lambda data: data.__delitem__(slice(0, 40)), "index points past its data|fails"),
        (lambda data: data.__delitem__(slice(20, None)), "truncated"),
    ],
    ids=["chunk", "index", "shortened", "truncated"],
)
def test_every_damage_to_a_shard_is_an_error_never_fill_values(damage, message, tmp_path):
    array, _ = _written(tmp_path)
    path = tmp_path / "a.zarr" / "c" / "0" / "0"
    data = bytearray(path.read_bytes())
    damage(data)
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match=message):
        read_encoded_chunks(array, np.arange(4))


def test_a_row_the_shard_does_not_hold_is_an_error(tmp_path):
    array, _ = _written(tmp_path)
    with pytest.raises(OSError, match="lacks chunks"):
        read_encoded_chunks(array, np.array([4, 5, 6]))  # row 6 lies past the array's end
