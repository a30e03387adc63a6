"""The processor's step without Kafka: a dict as the table, lists as the topics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from runstate.processors.progress import ProcessedOffsets
from runstate.processors.worker import RunProcessor
from runstate.runs.dead_letters import DeadLetterReason, SourceRecord
from runstate.runs.intake import CachedWriterSource, read_record
from runstate.runs.state_codec import StateCodec
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent, StepCompleted
from runstate.streams.partitioning import murmur2, partition_for
from tests.factories import RunBuilder, make_run


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # org.apache.kafka.common.utils.UtilsTest#testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_java(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert 0 <= partition_for(key, 6) < 6


class Table(dict[bytes, bytes]):
    def get(self, key: bytes, default: Any = None, *, partition: int = 0) -> bytes | None:  # type: ignore[override]
        return super().get(key, default)

    def put(self, key: bytes, value: bytes, *, partition: int) -> None:
        self[key] = value

    async def confirm(self) -> None:
        return None


class Topics:
    """Records in send order; a write to the table is only legal after confirmation."""

    def __init__(self) -> None:
        self.changes: list[tuple[bytes, bytes]] = []
        self.states: list[tuple[bytes, bytes]] = []
        self.dead: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.confirmed = 0

    def _ack(self) -> asyncio.Future[None]:
        self.confirmed += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_change(self, partition: int, key: bytes, change: bytes) -> Awaitable[Any]:
        self.changes.append((key, change))
        return self._ack()

    async def send_state(self, partition: int, key: bytes, state: bytes) -> Awaitable[Any]:
        self.states.append((key, state))
        return self._ack()

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        self.dead.append((key, value, headers))
        return self._ack()


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


def _processor(table: Table, topics: Topics) -> RunProcessor:
    return RunProcessor(
        table=table,
        outputs=topics,
        codec=StateCodec(),
        decode=_decode,
        max_event_bytes=4096,
        worker_id="w-test",
    )


def _records(events: list[AgentEvent], start: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord("t.events", 0, start + i, e.run_id.encode(), encode_event(e))
        for i, e in enumerate(events)
    ]


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


def test_batch_applies_in_order_and_outputs_before_writes() -> None:
    table, topics = Table(), Topics()
    events = make_run("run-a") + make_run("run-b")
    outcomes = asyncio.run(_processor(table, topics).process_batch(_records(events)))
    assert outcomes == ["applied"] * len(events)
    # a change per event, but each run's state is written (and sent) once per batch
    assert topics.confirmed == len(events) + 2
    assert [k for k, _ in topics.states] == [b"run-a", b"run-b"]
    assert topics.states[0][1] == table[b"run-a"]
    versions = [StateCodec().decode_change(c).version for k, c in topics.changes if k == b"run-a"]
    assert versions == list(range(1, len(make_run("run-a")) + 1))
    state = StateCodec().decode_state(table[b"run-a"])
    assert state.is_terminal and state.last_offset == len(make_run("run-a")) - 1


def test_redelivery_after_a_crash_emits_identical_outputs() -> None:
    events = make_run("run-a")
    first_table, first = Table(), Topics()
    asyncio.run(_processor(first_table, first).process_batch(_records(events[:3])))
    before_crash = dict(first_table)
    # crash: outputs of events 3.. were sent, the table write was lost
    asyncio.run(_processor(Table(first_table), first).process_batch(_records(events[3:], 3)))
    again = Topics()
    asyncio.run(_processor(Table(before_crash), again).process_batch(_records(events[3:], 3)))
    assert again.changes == first.changes[3:]


def test_duplicates_rewrite_the_stored_state_and_make_no_change() -> None:
    table, topics = Table(), Topics()
    events = make_run("run-a")[:2]
    p = _processor(table, topics)
    asyncio.run(p.process_batch(_records(events)))
    stored = table[b"run-a"]
    writes: list[bytes] = []
    table.put = lambda key, value, *, partition: writes.append(value)  # type: ignore[method-assign]
    assert asyncio.run(p.process(_records(events)[1])) == "duplicate"
    assert writes == [stored] and len(topics.changes) == 2
    resent = SourceRecord("t.events", 0, 9, b"run-a", encode_event(events[1]))
    assert asyncio.run(p.process(resent)) == "duplicate"  # same event id, later offset


def test_rejected_event_is_dead_lettered_with_headers() -> None:
    table, topics = Table(), Topics()
    orphan = RunBuilder("run-x").emit(StepCompleted, step="s", attempt=1)
    [record] = _records([orphan])
    record = SourceRecord(record.topic, 0, 7, record.key, record.value, (("origin", b"a"),))
    assert asyncio.run(_processor(table, topics).process(record)) == "dead_letter"
    [(key, value, headers)] = topics.dead
    h = dict(headers)
    assert (key, value) == (record.key, record.value)
    assert h["origin"] == b"a" and h["rs-reason"] == b"rejected"
    assert h["rs-error-class"] == b"run_not_started" and h["rs-source-offset"] == b"7"
    assert h["rs-worker"] == b"w-test" and not table


def test_processed_offsets_wake_waiters() -> None:
    async def scenario() -> tuple[bool, bool]:
        done = ProcessedOffsets()
        waiter = asyncio.create_task(done.wait_for(2, 10, 5))
        done.advance(2, 9)
        await asyncio.sleep(0)
        done.advance(2, 10)
        return await waiter, await done.wait_for(1, 0, 0.01)

    assert asyncio.run(scenario()) == (True, False)


def test_cached_writer_source_does_not_repeat_misses() -> None:
    calls: list[bytes] = []

    class Source:
        def lookup(self, fingerprint: bytes) -> str | None:
            calls.append(fingerprint)
            return None

    cached = CachedWriterSource(Source(), miss_ttl_s=60)
    assert cached.lookup(b"x") is None and cached.lookup(b"x") is None
    assert calls == [b"x"]


def test_decoded_state_cache_never_serves_a_state_the_table_no_longer_holds() -> None:
    events = make_run("run-a")
    table, topics = Table(), Topics()
    processor = _processor(table, topics)
    asyncio.run(processor.process_batch(_records(events[:3])))
    after_three = table[b"run-a"]
    asyncio.run(processor.process_batch(_records(events[3:5], 3)))
    # the table goes back under the processor (a restore from an older changelog point):
    # the cached newer state must not be used; the event is applied to what the table holds
    table[b"run-a"] = after_three
    [outcome] = asyncio.run(processor.process_batch(_records(events[3:4], 3)))
    assert outcome == "applied"
    assert StateCodec().decode_state(table[b"run-a"]).version == 4


def test_batch_returns_only_once_its_changelog_records_are_delivered() -> None:
    """Regression: faust's flush before a commit gives up after 0.1 s without a send, so a
    batch's offsets could be committed with its changelog records still queued, and a
    kill -9 then lost them for good. The batch must not return (be acknowledgeable, count
    as processed) before the table confirmed its writes."""

    class SlowChangelog(Table):
        def __init__(self) -> None:
            super().__init__()
            self.unconfirmed: list[bytes] = []
            self.delivered = asyncio.Event()

        def put(self, key: bytes, value: bytes, *, partition: int) -> None:
            super().put(key, value, partition=partition)
            self.unconfirmed.append(key)

        async def confirm(self) -> None:
            await self.delivered.wait()
            self.unconfirmed.clear()

    async def scenario() -> None:
        table, topics = SlowChangelog(), Topics()
        processor = _processor(table, topics)
        batch = asyncio.create_task(processor.process_batch(_records(make_run("run-a")[:3])))
        await asyncio.sleep(0.05)
        assert table.unconfirmed == [b"run-a"]  # written once per batch, changelog still queued
        assert not batch.done() and processor.progress.get(0) is None
        table.delivered.set()
        assert await batch == ["applied"] * 3
        assert not table.unconfirmed and processor.progress.get(0) == 2

    asyncio.run(scenario())


def test_batch_that_cannot_confirm_its_changelog_fails_unprocessed() -> None:
    class BrokenChangelog(Table):
        async def confirm(self) -> None:
            raise ConnectionError("changelog unreachable")

    processor = _processor(BrokenChangelog(), Topics())
    with pytest.raises(ConnectionError):
        asyncio.run(processor.process_batch(_records(make_run("run-a")[:2])))
    assert processor.progress.get(0) is None


def test_dead_letters_are_delivered_before_the_batch_returns() -> None:
    class PendingDeadLetters(Topics):
        def __init__(self) -> None:
            super().__init__()
            self.gate: asyncio.Future[None] | None = None

        async def dead_letter(
            self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
        ) -> Awaitable[Any]:
            self.dead.append((key, value, headers))
            self.gate = asyncio.get_running_loop().create_future()
            return self.gate

    async def scenario() -> None:
        topics = PendingDeadLetters()
        orphan = RunBuilder("run-x").emit(StepCompleted, step="s", attempt=1)
        batch = asyncio.create_task(_processor(Table(), topics).process_batch(_records([orphan])))
        await asyncio.sleep(0.05)
        assert topics.dead and not batch.done()
        assert topics.gate is not None
        topics.gate.set_result(None)
        assert await batch == ["dead_letter"]

    asyncio.run(scenario())
