"""A slide's bands: whole shards, at most ``band_tiles``, and enough of them, evenly
sized, that every core works to the end (a 1,024 + 212 split left one of two idle)."""

from __future__ import annotations

import itertools

import pytest

from tiling.job import split_bands


@pytest.mark.parametrize(
    ("n", "shard", "band", "workers"),
    [
        (n, shard, band, workers)
        for n, (shard, band), workers in itertools.product(
            [1, 100, 256, 257, 1236, 4678, 10727, 100_000],
            [(256, 1024), (256, 256), (64, 1024), (100, 300)],
            [1, 2, 3, 8],
        )
    ],
)
def test_bands_cover_the_slide_in_balanced_whole_shards(n, shard, band, workers):
    bands = split_bands(n, shard, band, workers)
    assert bands[0][0] == 0 and bands[-1][1] == n
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(bands))
    assert all(start % shard == 0 and 0 < stop - start <= band for start, stop in bands)
    shards = [-(-(stop - start) // shard) for start, stop in bands]
    assert max(shards) - min(shards) <= 1  # as equal as whole shards allow
    total = -(-n // shard)
    assert len(bands) >= min(total, 2 * workers)  # two rounds, where shards allow
    # Every round is full, unless the bands are already single shards.
    assert len(bands) % workers == 0 or len(bands) == total


def test_small_slide_on_two_cores_is_not_one_big_band_and_a_crumb():
    assert split_bands(1236, 256, 1024, 2) == ((0, 512), (512, 768), (768, 1024), (1024, 1236))
    assert split_bands(0, 256, 1024, 2) == ()
