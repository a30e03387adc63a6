"""A partition store in memory: for tests, and for workers that keep nothing on disk.

Same contract as the RocksDB store (:class:`~runstate.runtime.store.PartitionStore`), so the
same tests run against both. Keys are kept sorted in a list beside a dict: inserts cost
O(n), which is fine at test sizes and for a worker that restores everything at start anyway.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from runstate.runtime.store import Write

__all__ = ["MemoryPartitionStore", "MemoryStore"]


class MemoryPartitionStore:
    def __init__(self, partition: int) -> None:
        self._partition = partition
        self._values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self._changelog_offset: int | None = None

    @property
    def partition(self) -> int:
        return self._partition

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(key)

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end)
        # a copy, as RocksDB's iterator reads a snapshot: writes during the iteration do not
        # show in it
        entries = [(key, self._values[key]) for key in self._keys[lo:hi]]
        yield from reversed(entries) if reverse else entries

    def apply(self, writes: Sequence[Write], *, changelog_offset: int) -> None:
        for key, value in writes:
            if value is None:
                if self._values.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._values:
                    bisect.insort(self._keys, key)
                self._values[key] = value
        self._changelog_offset = changelog_offset

    def changelog_offset(self) -> int | None:
        return self._changelog_offset

    def size_estimate(self) -> tuple[int, int]:
        """``(keys, bytes)``: the exact key count; bytes are not counted (that would read
        every value), so 0."""
        return len(self._keys), 0

    def close(self) -> None:
        pass


class MemoryStore:
    """Partition stores that live as long as this object (a reopened partition keeps its
    data until :meth:`drop`, like a directory would)."""

    def __init__(self) -> None:
        self._partitions: dict[int, MemoryPartitionStore] = {}

    def open(self, partition: int) -> MemoryPartitionStore:
        return self._partitions.setdefault(partition, MemoryPartitionStore(partition))

    def drop(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    @property
    def waiting_on(self) -> str | None:
        return None  # a write to memory never waits

    def close(self) -> None:
        pass
