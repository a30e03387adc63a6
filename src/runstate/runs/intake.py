"""Turn a raw events-topic record into an event, or into a dead letter saying why not.

Decoding happens here, in our code, from the raw bytes the consumer hands over untouched: had
the client library deserialized the value, a decode error would be logged and the record
silently skipped (faust-streaming, runstate's first base, acked records whose
deserialization failed), which is exactly the loss the dead-letter topic exists to prevent.
Pure (no Kafka), so it lives in the run domain; the runtime and replay use it.
"""

from __future__ import annotations

import time
from typing import Protocol

from runstate.errors import DecodeError, UnknownSchema
from runstate.runs.dead_letters import DeadLetter, DeadLetterReason, SourceRecord
from runstate.schemas.events import AgentEvent
from runstate.schemas.sealed import malformed_sealed

__all__ = ["CachedWriterSource", "EventDecoder", "read_record"]


class EventDecoder(Protocol):
    """Decodes single-object encoded bytes (``runstate.schemas.convert.decode_event``)."""

    def __call__(self, data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent: ...


def read_record(
    record: SourceRecord, *, decode: EventDecoder, max_event_bytes: int
) -> AgentEvent | DeadLetter:
    """The event in ``record``, or the dead letter to send instead.

    Checks run cheapest first, and the size check comes before decoding so an oversize
    record costs nothing more than its length.
    """

    def dead(reason: DeadLetterReason, error_class: str, detail: str) -> DeadLetter:
        return DeadLetter(record, reason, error_class, detail)

    where = f"{record.topic}[{record.partition}]@{record.offset}"
    if record.value is None:
        return dead(
            DeadLetterReason.NULL_VALUE,
            "NullValue",
            f"record {where} has no value (a tombstone?); events are never deleted this way",
        )
    if len(record.value) > max_event_bytes:
        return dead(
            DeadLetterReason.OVERSIZE,
            "OversizeRecord",
            f"record {where} is {len(record.value)} bytes, over the limit of {max_event_bytes}"
            " (RUNSTATE_MAX_EVENT_BYTES); store large data elsewhere and send a reference",
        )
    if not record.key:
        return dead(
            DeadLetterReason.MISSING_KEY,
            "MissingKey",
            f"record {where} has no key; key every event by its run_id",
        )
    try:
        event = decode(
            record.value, topic=record.topic, partition=record.partition, offset=record.offset
        )
    except UnknownSchema as exc:
        return dead(DeadLetterReason.UNKNOWN_SCHEMA, type(exc).__name__, str(exc))
    except DecodeError as exc:
        return dead(DeadLetterReason.UNDECODABLE, type(exc).__name__, str(exc))
    key = record.key.decode("utf-8", "replace")
    if key != event.run_id:
        return dead(
            DeadLetterReason.KEY_MISMATCH,
            "KeyMismatch",
            f"record {where} is keyed {key!r} but its event is for run {event.run_id!r};"
            " key every event by its run_id so a run's events stay in one partition",
        )
    # The processor never opens a sealed field, but one that is not even well formed would
    # sit in the state for ever, unreadable: set the event aside instead.
    malformed = malformed_sealed(event.event_type, dict(event))
    if malformed is not None:
        return dead(
            DeadLetterReason.BAD_CIPHERTEXT,
            "TamperedValue",
            f"record {where}: sealed personal field {malformed}; the writer's SDK or the"
            " record is broken (the value is not shown here)",
        )
    return event


class WriterSchemaLookup(Protocol):
    def lookup(self, fingerprint: bytes) -> str | None: ...


class CachedWriterSource:
    """A writer-schema source that remembers misses for a while.

    Garbage input carries random "fingerprints"; without this every such record would make
    the schemas-topic source re-read the whole topic, blocking the worker's event loop.
    A schema published after a miss is found once ``miss_ttl_s`` has passed.
    """

    def __init__(self, source: WriterSchemaLookup, *, miss_ttl_s: float = 10.0) -> None:
        self._source = source
        self._miss_ttl_s = miss_ttl_s
        self._misses: dict[bytes, float] = {}

    def lookup(self, fingerprint: bytes) -> str | None:
        now = time.monotonic()
        missed = self._misses.get(fingerprint)
        if missed is not None and now - missed < self._miss_ttl_s:
            return None
        found = self._source.lookup(fingerprint)
        if found is None:
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[fingerprint] = now
        else:
            self._misses.pop(fingerprint, None)
        return found
