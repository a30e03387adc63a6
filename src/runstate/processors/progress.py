"""How far this worker has processed each partition, and waiting for it (read-your-writes).

A producer that got ``Delivery(partition, offset)`` back can ask a query to wait until the
owning worker has processed that offset, so it never reads a state older than its own write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["ProcessedOffsets"]


class ProcessedOffsets:
    """The highest processed offset per partition, with waiters woken as it grows.

    "Processed" includes records that were dead-lettered or found duplicate: a reader waiting
    for its offset wants to know the worker has looked at it, whatever the outcome.
    """

    def __init__(self) -> None:
        self._done: dict[int, int] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    def get(self, partition: int) -> int | None:
        """The highest processed offset of ``partition``, or None if unknown here."""
        return self._done.get(partition)

    def advance(self, partition: int, offset: int) -> None:
        """Record ``offset`` of ``partition`` as processed and wake whoever waited for it."""
        if offset <= self._done.get(partition, -1):
            return
        self._done[partition] = offset
        if not self._waiters:
            return
        still: list[tuple[int, int, asyncio.Future[None]]] = []
        for p, wanted, fut in self._waiters:
            if fut.done():
                continue
            if p == partition and offset >= wanted:
                fut.set_result(None)
            else:
                still.append((p, wanted, fut))
        self._waiters = still

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is known of partitions this worker no longer owns."""
        for p in partitions:
            self._done.pop(p, None)

    def snapshot(self) -> dict[int, int]:
        return dict(self._done)

    async def wait_for(self, partition: int, offset: int, timeout_s: float) -> bool:
        """Wait until ``offset`` of ``partition`` is processed; False if ``timeout_s`` ran out."""
        if self._done.get(partition, -1) >= offset:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((partition, offset, fut))
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return False
        return True
