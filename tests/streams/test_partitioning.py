"""Keys go to the partition Java's default partitioner picks (murmur2), so every client agrees."""

from __future__ import annotations

import pytest

from runstate.streams.partitioning import murmur2, partition_for


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # org.apache.kafka.common.utils.UtilsTest#testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_java(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert 0 <= partition_for(key, 6) < 6
