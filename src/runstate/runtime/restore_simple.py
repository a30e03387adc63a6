"""A minimal restore: replay a changelog partition into a store, until recovery lands.

Stands in for :mod:`runstate.runtime.recovery` (being written beside this runtime); the
worker only sees the :class:`PartitionRestorer` protocol, so swapping it is one line where
the worker is built.
"""

from __future__ import annotations

from typing import Protocol

from runstate.runtime.store import PartitionStore, Write
from runstate.streams.reader import read_topic

__all__ = ["ChangelogReplay", "PartitionRestorer"]


class PartitionRestorer(Protocol):
    """Brings a partition store up to the end of its changelog partition."""

    def __call__(self, store: PartitionStore) -> int:
        """Restore ``store`` (same partition number as the changelog's); returns the number
        of changelog records applied.

        Raises:
            TimeoutError: the changelog could not be read to its end in time.
        """
        ...


class ChangelogReplay:
    """Reads ``read_committed`` from the store's changelog offset + 1 to the end seen now.

    Aborted writes (a crashed or fenced worker's) are never read, so the store ends exactly
    at the last committed checkpoint of whoever owned the partition before.
    """

    def __init__(
        self, bootstrap_servers: str, topic: str, *, timeout_s: float = 60.0, chunk: int = 1000
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._timeout_s = timeout_s
        self._chunk = chunk

    def __call__(self, store: PartitionStore) -> int:
        last = store.changelog_offset()
        start = 0 if last is None else last + 1
        applied = 0
        pending: list[Write] = []
        offset = -1
        for record in read_topic(
            self._bootstrap,
            self._topic,
            start={store.partition: start},
            partitions=[store.partition],
            timeout_s=self._timeout_s,
        ):
            if record.key is None:
                continue
            pending.append((record.key, record.value))
            offset = record.offset
            if len(pending) >= self._chunk:
                store.apply(pending, changelog_offset=offset)
                applied += len(pending)
                pending = []
        if pending:
            store.apply(pending, changelog_offset=offset)
            applied += len(pending)
        return applied
