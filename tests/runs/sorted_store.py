"""A small real ordered key space for the layout tests: sorted keys plus a dict.

It behaves as the runtime's partition stores do for reading (``get``, lazy ``items`` over
``[start, end)``) and applies write batches as the changelog would (``None`` deletes).
:class:`CountingReader` records every key a query reads, to prove what it did not touch.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from runstate.runs.keyspace import KeyValueReader, Write


class SortedStore:
    """An in-memory ordered bytes key space."""

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(key)

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end)
        keys = self._keys[lo:hi]
        for key in reversed(keys) if reverse else keys:
            yield key, self._values[key]

    def apply(self, writes: Iterable[Write]) -> None:
        for key, value in writes:
            if value is None:
                if self._values.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._values:
                    bisect.insort(self._keys, key)
                self._values[key] = value

    def under(self, prefix: bytes) -> dict[bytes, bytes]:
        """Every entry whose key starts with ``prefix``."""
        return {k: v for k, v in self._values.items() if k.startswith(prefix)}

    def __len__(self) -> int:
        return len(self._keys)


class CountingReader:
    """A reader over ``inner`` that remembers every key it handed out."""

    def __init__(self, inner: KeyValueReader) -> None:
        self.inner = inner
        self.read: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        value = self.inner.get(key)
        if value is not None:
            self.read.append(key)
        return value

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.inner.items(start, end, reverse=reverse):
            self.read.append(key)
            yield key, value
