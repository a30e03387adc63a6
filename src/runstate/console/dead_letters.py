"""The newest dead letters, for the console's page: what was set aside, why, and from where.

Read from the dead-letter topic as ``runstate dead-letters list`` reads it: the last
``limit`` records of each partition, never the topic's whole history. Reading only; requeuing
stays a CLI command (it needs the operator's care: is the cause fixed?).
"""

from __future__ import annotations

from dataclasses import dataclass

from runstate.runs.dead_letters import (
    HEADER_DETAIL,
    HEADER_ERROR_CLASS,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)
from runstate.streams.reader import RawRecord, end_offsets, read_topic

__all__ = ["DeadLetter", "newest_dead_letters"]

_MARKER = b"requeued:"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record set aside, and the position it had on its original topic."""

    ref: str
    run_id: str | None
    reason: str
    error_class: str
    detail: str
    source_topic: str
    source_partition: str
    source_offset: str
    requeued: bool


def _text(record: RawRecord, header: str) -> str:
    return (record.header(header) or b"").decode("utf-8", "replace")


def newest_dead_letters(bootstrap: str, topic: str, *, limit: int) -> list[DeadLetter]:
    """The last ``limit`` records of each partition of ``topic``, newest first.

    Raises:
        BrokerError: Kafka could not be reached.
    """
    marks = end_offsets(bootstrap, topic)
    start = {p: max(lo, hi - limit) for p, (lo, hi) in marks.items()}
    records = list(read_topic(bootstrap, topic, start=start))
    requeued = {
        r.key[len(_MARKER) :].decode("utf-8", "replace")
        for r in records
        if r.key and r.key.startswith(_MARKER)
    }
    letters = [
        DeadLetter(
            ref=f"{r.partition}:{r.offset}",
            run_id=None if r.key is None else r.key.decode("utf-8", "replace"),
            reason=_text(r, HEADER_REASON),
            error_class=_text(r, HEADER_ERROR_CLASS),
            detail=_text(r, HEADER_DETAIL),
            source_topic=_text(r, HEADER_SOURCE_TOPIC),
            source_partition=_text(r, HEADER_SOURCE_PARTITION),
            source_offset=_text(r, HEADER_SOURCE_OFFSET),
            requeued=f"{r.partition}:{r.offset}" in requeued,
        )
        for r in records
        if not (r.key and r.key.startswith(_MARKER))
    ]
    by_time = {f"{r.partition}:{r.offset}": r.timestamp_ms for r in records}
    return sorted(letters, key=lambda d: by_time.get(d.ref, 0), reverse=True)
