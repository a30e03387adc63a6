"""Intake: every raw record becomes its event or a dead letter saying why, in process.

The dead letter's reason and error class are what alerts and `runstate failures` group by,
so each is pinned here; the size limit is checked at its boundary. Found by
``make mutation``: the runtime's tests reached ``read_record`` but checked none of this.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runstate.errors import DecodeError, UnknownSchema
from runstate.runs.dead_letters import DeadLetter, DeadLetterReason, SourceRecord
from runstate.runs.intake import CachedWriterSource, read_record
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent, RunCompleted
from tests.factories import RunBuilder

EVENT = RunCompleted(
    event_id="0190f0c0-0000-7000-8000-000000000001",
    run_id="run-1",
    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    producer="tests",
)


class Decoder:
    """Decodes b"ok" into EVENT; raises for anything else; notes where it was asked to read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
        self.calls.append((topic, partition, offset))
        if data == b"unknown":
            raise UnknownSchema("writer schema 0xab is unknown", topic=topic)
        if data != b"ok" and not data.startswith(b"o"):
            raise DecodeError("not single-object encoded", topic=topic)
        return EVENT


def record(value: bytes | None, key: bytes | None = b"run-1") -> SourceRecord:
    return SourceRecord("rs.events", 2, 41, key, value)


@pytest.mark.parametrize(
    ("source", "reason", "error_class", "detail"),
    [
        (record(None), DeadLetterReason.NULL_VALUE, "NullValue", "rs.events[2]@41 has no value"),
        (record(b"ok", key=None), DeadLetterReason.MISSING_KEY, "MissingKey", "has no key"),
        (record(b"ok", key=b""), DeadLetterReason.MISSING_KEY, "MissingKey", "has no key"),
        (record(b"unknown"), DeadLetterReason.UNKNOWN_SCHEMA, "UnknownSchema", "0xab"),
        (record(b"garbage"), DeadLetterReason.UNDECODABLE, "DecodeError", "single-object"),
        (
            record(b"ok", key=b"run-2"),
            DeadLetterReason.KEY_MISMATCH,
            "KeyMismatch",
            "keyed 'run-2' but its event is for run 'run-1'",
        ),
    ],
    ids=["null value", "no key", "empty key", "unknown schema", "undecodable", "key mismatch"],
)
def test_a_bad_record_becomes_a_dead_letter_saying_why(
    source: SourceRecord, reason: DeadLetterReason, error_class: str, detail: str
) -> None:
    dead = read_record(source, decode=Decoder(), max_event_bytes=100)
    assert isinstance(dead, DeadLetter)
    assert (dead.source, dead.reason, dead.error_class) == (source, reason, error_class)
    assert detail in dead.detail


def test_a_good_record_is_decoded_where_it_was_read() -> None:
    decoder = Decoder()
    assert read_record(record(b"ok"), decode=decoder, max_event_bytes=100) == EVENT
    assert decoder.calls == [("rs.events", 2, 41)]


def test_the_size_limit_is_inclusive_and_checked_before_decoding() -> None:
    at_limit = b"o" * 10
    decoder = Decoder()
    assert read_record(record(at_limit), decode=decoder, max_event_bytes=10) == EVENT
    over: Any = read_record(record(at_limit + b"o"), decode=decoder, max_event_bytes=10)
    assert isinstance(over, DeadLetter)
    assert (over.reason, over.error_class) == (DeadLetterReason.OVERSIZE, "OversizeRecord")
    assert "is 11 bytes, over the limit of 10 (RUNSTATE_MAX_EVENT_BYTES)" in over.detail
    assert len(decoder.calls) == 1  # the oversize record was never decoded


def test_a_key_that_is_not_utf8_is_a_key_mismatch_not_a_crash() -> None:
    dead = read_record(record(b"ok", key=b"\xffrun-1"), decode=Decoder(), max_event_bytes=100)
    assert isinstance(dead, DeadLetter) and dead.reason is DeadLetterReason.KEY_MISMATCH
    assert "keyed '\ufffdrun-1'" in dead.detail


class Schemas:
    """A writer-schema source that knows one fingerprint and counts its lookups."""

    def __init__(self) -> None:
        self.lookups: list[bytes] = []
        self.known: dict[bytes, str] = {b"known": "schema"}

    def lookup(self, fingerprint: bytes) -> str | None:
        self.lookups.append(fingerprint)
        return self.known.get(fingerprint)


def test_a_missing_writer_schema_is_not_looked_up_again_for_a_while() -> None:
    schemas = Schemas()
    cached = CachedWriterSource(schemas, miss_ttl_s=3600)
    assert [cached.lookup(b"junk") for _ in range(3)] == [None, None, None]
    assert [cached.lookup(b"known") for _ in range(2)] == ["schema", "schema"]
    assert schemas.lookups == [b"junk", b"known", b"known"]


def test_a_schema_published_after_a_miss_is_found_once_the_miss_expired() -> None:
    schemas = Schemas()
    cached = CachedWriterSource(schemas, miss_ttl_s=0.0)
    assert cached.lookup(b"late") is None
    schemas.known[b"late"] = "schema v2"
    assert cached.lookup(b"late") == "schema v2"
    assert schemas.lookups == [b"late", b"late"]


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


def test_read_record_names_each_problem_with_the_real_decoder() -> None:
    e = RunBuilder("r").start()
    good = encode_event(e)

    def reason(key: bytes | None, value: bytes | None) -> object:
        got = read_record(SourceRecord("t", 0, 1, key, value), decode=_decode, max_event_bytes=1024)
        return getattr(got, "reason", got)

    assert reason(b"r", good) == e
    assert reason(b"r", None) is DeadLetterReason.NULL_VALUE
    assert reason(b"r", b"x" * 2000) is DeadLetterReason.OVERSIZE
    assert reason(None, good) is DeadLetterReason.MISSING_KEY
    assert reason(b"other", good) is DeadLetterReason.KEY_MISMATCH
    assert reason(b"r", b"junk") is DeadLetterReason.UNDECODABLE
    assert reason(b"r", b"\xc3\x01" + bytes(8) + b"\x00") is DeadLetterReason.UNKNOWN_SCHEMA


@pytest.mark.parametrize(
    ("output", "dead_reason"),
    [
        ("rsenc1.broken", DeadLetterReason.BAD_CIPHERTEXT),
        ("rsenc1.YQ.zz.output_ref." + "A" * 40, DeadLetterReason.BAD_CIPHERTEXT),
        ("rsenc1.YQ.ab12.output_ref." + "A" * 40, None),  # well formed: the processor keeps it
        ("clear text", None),  # a deployment without a master key
    ],
)
def test_a_malformed_sealed_field_is_a_dead_letter(
    output: str, dead_reason: DeadLetterReason | None
) -> None:
    event = EVENT.model_copy(update={"output_ref": output})
    data = encode_event(event)
    got = read_record(
        record(data),
        decode=lambda d, **_: decode_event(d),
        max_event_bytes=10_000,
    )
    if dead_reason is None:
        assert got == event
        return
    assert isinstance(got, DeadLetter)
    assert (got.reason, got.error_class) == (dead_reason, "TamperedValue")
    assert "RunCompleted.output_ref" in got.detail and output not in got.detail
