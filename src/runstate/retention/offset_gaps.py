"""Offsets the archiver may leave without a record, and how it proves them (bug F4).

A segment claims every offset of its range ``[first, last]`` as archived: the archived
watermark, and so ``retention apply``, trust that claim. A range may therefore only hold
offsets without a record when the broker itself has none to give: transaction markers and
aborted records under ``read_committed``, compacted-away records, or records trimmed before
they could be read. Everything else is a bug upstream (a message fetched before a ``seek``
and delivered after it, say) and must not be published.

The archiver accepts exactly the next offset it expects. When the consumer hands it a later
one, :class:`KafkaOffsetProbe` asks the broker, with a consumer of its own and so no
prefetched messages, for the first readable offset at or after the expected one; only if that
is the offset in hand is the hole proven (:class:`ProvenGaps`). :func:`first_unproven_hole`
checks a segment against those proofs right before it is published.

The events topic has no transactional producer, so on it no hole is ever proven and the probe
never runs in normal operation; on a transactional topic it runs once per marker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition

from runstate.streams import clients

__all__ = [
    "KafkaOffsetProbe",
    "OffsetProbe",
    "ProvenGaps",
    "first_unproven_hole",
]

log = logging.getLogger(__name__)


class OffsetProbe(Protocol):
    """Where the broker's next readable record of a partition is."""

    def next_readable(self, partition: int, offset: int) -> int | None:
        """The first offset at or after ``offset`` a ``read_committed`` consumer is given:
        a record's offset, or the partition's end offset when no record follows. None when
        the broker gave no answer in time (the caller must then treat the hole as unproven).
        """
        ...

    def close(self) -> None:
        """Release the probe's connections."""
        ...


@dataclass
class ProvenGaps:
    """Half-open offset ranges ``[low, high)`` the broker confirmed hold no readable record."""

    ranges: list[tuple[int, int]] = field(default_factory=list)

    def add(self, low: int, high: int) -> None:
        if high > low:
            self.ranges.append((low, high))

    def covers(self, low: int, high: int) -> bool:
        """Whether ``[low, high)`` lies inside one proven range (empty ranges always do)."""
        return high <= low or any(lo <= low and high <= hi for lo, hi in self.ranges)

    def forget_below(self, offset: int) -> None:
        """Drop ranges wholly below ``offset`` (published or skipped; never needed again)."""
        self.ranges = [(lo, hi) for lo, hi in self.ranges if hi > offset]


def first_unproven_hole(
    start: int, offsets: Iterable[int], end: int, gaps: ProvenGaps
) -> tuple[int, int] | None:
    """The first part of ``[start, end]`` a segment would claim without holding it.

    Args:
        start: The segment's first offset.
        offsets: Its records' offsets, in order.
        end: Its last offset.
        gaps: Holes the broker confirmed.

    Returns:
        ``(first, last)`` of the first offsets that are neither a record nor inside a proven
        gap (or of a record out of order), or None when the segment is sound.
    """
    expected = start
    for offset in offsets:
        if offset < expected or offset > end or not gaps.covers(expected, offset):
            return (expected, offset)
        expected = offset + 1
    if not gaps.covers(expected, end + 1):
        return (expected, end)
    return None


class KafkaOffsetProbe:
    """An :class:`OffsetProbe` with a consumer of its own, assigned (never subscribed).

    Its own consumer has nothing prefetched, so its answer cannot be a message left over from
    before a ``seek``. It reads like the archiver (``read_committed``; an offset below the
    log start resets to the earliest one, so trimmed offsets count as a gap).

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        topic: The topic the archiver reads.
        group_id: Only to satisfy the client; the probe never joins it nor commits.
        timeout_s: How long one answer may take before :meth:`next_readable` gives None.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        group_id: str,
        timeout_s: float = 10.0,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = clients.consumer,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
        self._factory = consumer_factory
        self._consumer: Consumer | None = None

    def next_readable(self, partition: int, offset: int) -> int | None:
        if self._consumer is None:
            self._consumer = self._factory(self._config)
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, partition, offset)])
        try:
            deadline = time.monotonic() + self.timeout_s
            while (left := deadline - time.monotonic()) > 0:
                msg = consumer.poll(min(left, 0.5))
                if msg is None or msg.partition() != partition:
                    continue
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("probing %s/%s@%s: %s", self.topic, partition, offset, err)
                    return None
                got = msg.offset()
                # Below ``offset`` only if the fetch was reset: no answer about ``offset``.
                return got if got is not None and got >= offset else None
            log.warning(
                "probing %s/%s@%s: no answer in %.0fs",
                self.topic,
                partition,
                offset,
                self.timeout_s,
            )
            return None
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
