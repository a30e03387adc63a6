"""The local state store: ordered bytes per partition, behind one interface.

The runtime keeps each owned (and standby) partition's table in a :class:`PartitionStore`:
RocksDB (:mod:`runstate.runtime.rocksdb_store`) in production, a sorted in-memory map
(:mod:`runstate.runtime.memory_store`) where nothing must survive the process. The same
parametrised tests run against both.

Writes never go straight to a store. A batch reads and writes through a
:class:`PartitionTransaction` (its own writes overlay the store), the runtime turns the
transaction's writes into changelog records inside the Kafka transaction, and only once that
Kafka transaction has committed are they applied to the store, atomically, together with the
changelog offset they reach (:meth:`PartitionStore.apply`). An aborted Kafka transaction
simply drops the overlay: the store never holds what the broker did not commit.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterator, Sequence
from typing import Protocol

__all__ = ["PartitionStore", "PartitionTransaction", "Store", "Write"]

#: One write: ``(key, value)``, value ``None`` deletes the key (a tombstone in the changelog).
Write = tuple[bytes, bytes | None]


class PartitionStore(Protocol):
    """One partition's table: ordered keys, atomic batch writes, the changelog position."""

    @property
    def partition(self) -> int: ...

    def get(self, key: bytes) -> bytes | None: ...

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in key order (or reversed); lazy, so a caller
        that stops early reads no more. The entries are those of the store when iteration
        began: writes applied meanwhile do not show in it."""
        ...

    def apply(self, writes: Sequence[Write], *, changelog_offset: int) -> None:
        """Apply ``writes`` in order, atomically, and record that the store now reflects the
        changelog up to and including ``changelog_offset``.

        Raises:
            StorageFull: no space left; nothing was applied.
        """
        ...

    def changelog_offset(self) -> int | None:
        """The last changelog offset applied (None: empty, restore from the beginning)."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    """Opens partition stores under one data directory (or in memory)."""

    def open(self, partition: int) -> PartitionStore: ...

    def drop(self, partition: int) -> None:
        """Delete the partition's data (damaged, or restored from scratch)."""
        ...

    @property
    def waiting_on(self) -> str | None:
        """Why a write waits right now (e.g. RocksDB stalls writes), for ``/health``; read
        from other threads; None: it does not."""
        ...

    def close(self) -> None: ...


class PartitionTransaction:
    """A batch's view of one partition: its own writes over the store's committed data.

    Reads see the batch's writes first, point reads and ordered ranges alike (a run written
    earlier in the interval is read back with its entries); :meth:`writes` lists them (last
    write of a key wins) for the changelog and for :meth:`PartitionStore.apply` once
    committed. Pending keys are kept sorted as they come, so a range read merges two ordered
    streams instead of sorting the interval's writes again.
    """

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self._pending: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self.store.get(key)

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """The committed entries in ``[start, end)`` with this batch's writes over them."""
        lo = bisect.bisect_left(self._sorted, start)
        hi = bisect.bisect_left(self._sorted, end)
        if lo == hi:  # nothing pending in the range: the store's own iterator, lazily
            yield from self.store.items(start, end, reverse=reverse)
            return
        pending = self._sorted[lo:hi]
        committed = self.store.items(start, end, reverse=reverse)
        if reverse:
            pending.reverse()
        merged = heapq.merge(
            ((k, 0, None) for k in pending),
            ((k, 1, v) for k, v in committed),
            key=lambda item: item[0],
            reverse=reverse,
        )
        last: bytes | None = None
        for key, _rank, value in merged:
            if key == last:
                continue  # the pending write of this key came first and won
            last = key
            current = self._pending.get(key, value)
            if current is not None:
                yield key, current

    def set(self, key: bytes, value: bytes) -> None:
        self._put(key, value)

    def delete(self, key: bytes) -> None:
        self._put(key, None)

    def _put(self, key: bytes, value: bytes | None) -> None:
        if key not in self._pending:
            bisect.insort(self._sorted, key)
        self._pending[key] = value

    def writes(self) -> list[Write]:
        return list(self._pending.items())

    def __bool__(self) -> bool:
        return bool(self._pending)
