"""Intake of a raw events-topic record: each way it can be bad has its own reason."""

from __future__ import annotations

from runstate.runs.dead_letters import DeadLetterReason, SourceRecord
from runstate.runs.intake import CachedWriterSource, read_record
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent
from tests.factories import RunBuilder


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


def test_read_record_names_each_problem() -> None:
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


def test_cached_writer_source_does_not_repeat_misses() -> None:
    calls: list[bytes] = []

    class Source:
        def lookup(self, fingerprint: bytes) -> str | None:
            calls.append(fingerprint)
            return None

    cached = CachedWriterSource(Source(), miss_ttl_s=60)
    assert cached.lookup(b"x") is None and cached.lookup(b"x") is None
    assert calls == [b"x"]
