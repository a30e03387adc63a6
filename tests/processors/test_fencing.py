"""Self-fencing, the batch loop's failure paths and the monotonic restore, without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pytest

from runstate.processors.batch_loop import BatchLoop
from runstate.processors.fencing import (
    EXIT_BATCH_FAILED,
    EXIT_FENCED,
    EXIT_OFFSET_GAP,
    BatchFence,
    Fenced,
    StallWatchdog,
    keep_monotonic,
    peek_version,
)
from runstate.processors.worker import RunProcessor, StorageFull
from runstate.runs.dead_letters import SourceRecord
from runstate.runs.state_codec import StateCodec, encode_state
from runstate.schemas.convert import encode_event
from runstate.schemas.events import AgentEvent
from tests.factories import make_run
from tests.processors.test_processor_unit import Table, Topics, _decode
from tests.runs.conftest import RunStateFactory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Owned:
    partitions: set[int] = field(default_factory=lambda: {0, 1})

    def active_partitions(self) -> Collection[int]:
        return self.partitions


class StallingTopics(Topics):
    """Output deliveries that take ``stall_s`` on the clock (SIGSTOP while awaiting them)."""

    def __init__(self, clock: Clock, stall_s: float = 0.0, revoke: Owned | None = None) -> None:
        super().__init__()
        self.clock, self.stall_s, self.revoke = clock, stall_s, revoke

    def _ack(self) -> asyncio.Future[None]:
        self.clock.now += self.stall_s
        if self.revoke is not None:
            self.revoke.partitions.discard(1)
        return super()._ack()


class FailingTable(Table):
    def __init__(self, *, full_for: int) -> None:
        super().__init__()
        self.full_for = full_for

    def put(self, key: bytes, value: bytes, *, partition: int) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise Exception("IO error: No space left on device: While appending to file")
        super().put(key, value, partition=partition)


def _events() -> list[AgentEvent]:
    return make_run("run-a", seed=1, end="completed")[:4]


def _records(events: list[AgentEvent], partition: int = 0, start: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord("t.events", partition, start + i, e.run_id.encode(), encode_event(e))
        for i, e in enumerate(events)
    ]


def _processor(table: Table, topics: Topics) -> RunProcessor:
    return RunProcessor(
        table=table,
        outputs=topics,
        codec=StateCodec(),
        decode=_decode,
        max_event_bytes=4096,
        worker_id="w-test",
    )


def _fence(clock: Clock, owned: Owned | None = None) -> BatchFence:
    dog = StallWatchdog(threshold_s=3.0, clock=clock)
    dog.running = True
    return BatchFence(dog, owned or Owned())


# -- stall detection ------------------------------------------------------------------------


def test_watchdog_counts_gaps_longer_than_the_threshold() -> None:
    clock = Clock()
    dog = StallWatchdog(threshold_s=3.0, clock=clock)
    clock.now += 60.0
    assert dog.stalled_since(dog.stalls) is None  # not watching yet (start-up)
    dog.running, dog.last_tick = True, clock.now
    token = dog.stalls
    clock.now += 0.1
    dog.tick()
    assert dog.stalled_since(token) is None
    clock.now += 14.0
    assert dog.stalled_since(token) == pytest.approx(14.0)  # before the watchdog ran again
    dog.tick()
    assert dog.stalls == 1 and dog.stalled_since(token) == pytest.approx(14.0)
    assert dog.stalled_since(dog.stalls) is None


def test_a_stall_while_outputs_are_in_flight_writes_nothing_to_the_table() -> None:
    clock = Clock()
    table, topics = Table(), StallingTopics(clock, stall_s=14.0)
    with pytest.raises(Fenced, match=r"stalled \d+\.\d s"):
        asyncio.run(
            _processor(table, topics).process_batch(_records(_events()), guard=_fence(clock))
        )
    assert table == {}


def test_a_stall_before_the_outputs_sends_nothing() -> None:
    clock = Clock()
    table, topics = Table(), Topics()
    fence = _fence(clock)

    class Late(BatchFence):
        def begin(self) -> int:
            token = super().begin()
            clock.now += 10.0  # stopped right after the batch was taken
            return token

    with pytest.raises(Fenced):
        asyncio.run(
            _processor(table, topics).process_batch(
                _records(_events()), guard=Late(fence.watchdog, fence.assignment)
            )
        )
    assert (topics.changes, topics.states, table) == ([], [], {})


def test_records_of_a_partition_revoked_mid_batch_are_dropped_unwritten() -> None:
    clock, owned = Clock(), Owned()
    table, topics = Table(), StallingTopics(clock, revoke=owned)
    records = _records(_events(), partition=0) + _records(
        make_run("run-b", seed=2)[:2], partition=1
    )
    outcomes = asyncio.run(
        _processor(table, topics).process_batch(records, guard=_fence(clock, owned))
    )
    assert outcomes[-2:] == ["dropped", "dropped"]
    assert "dropped" not in outcomes[:-2]
    assert set(table) == {b"run-a"}


# -- the batch loop -------------------------------------------------------------------------


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    acked: bool = False


@dataclass
class Event:
    message: Message


class Halted(Exception):
    pass


def _halt(reason: str, code: int, *, restart_in_place: bool = False) -> None:
    raise Halted(code, reason)


class NoBind:
    def bind(self, events: Any) -> None:
        return None


def _batch(records: list[SourceRecord]) -> list[Event]:
    return [
        Event(Message(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers)))
        for r in records
    ]


@dataclass
class GroupConsumer:
    """The group's committed offsets and the seeks the loop asked for."""

    committed: dict[int, int] = field(default_factory=dict)
    seeks: list[tuple[int, int]] = field(default_factory=list)

    async def start_offsets(self, partitions: Collection[int]) -> dict[int, int]:
        return {p: self.committed.get(p, 0) for p in partitions}

    async def rewind(self, partition: int, offset: int) -> None:
        self.seeks.append((partition, offset))


def _loop(
    processor: RunProcessor,
    clock: Clock,
    owned: Owned | None = None,
    group: GroupConsumer | None = None,
) -> BatchLoop:
    group = group or GroupConsumer()
    return BatchLoop(
        processor=processor,
        table=NoBind(),
        fence=_fence(clock, owned),
        halt=_halt,
        restart_when_fenced=True,
        start_offsets=group.start_offsets,
        rewind=group.rewind,
        seek_grace_s=5.0,
        clock=clock,
    )


class FailingTopics(Topics):
    def _ack(self) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(RuntimeError("broker said no"))
        return fut


def test_a_failed_batch_stops_the_worker_without_acknowledging_it() -> None:
    clock = Clock()
    events = _batch(_records(_events()))
    loop = _loop(_processor(Table(), FailingTopics()), clock)
    with pytest.raises(Halted) as stopped:
        asyncio.run(loop.handle(events))
    assert stopped.value.args[0] == EXIT_BATCH_FAILED
    # faust's clean-up then skips these: a message marked acked is not committed
    assert all(e.message.acked for e in events)


class BlockingTopics(Topics):
    """Output deliveries that never complete (the worker is stopped while awaiting them)."""

    def _ack(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


def test_a_cancelled_batch_is_not_acknowledged() -> None:
    # faust stopping (SIGTERM) cancels the agent mid-batch, then closes take_events, whose
    # clean-up acks the batch; the consumer's stop would commit it although nothing of the
    # batch reached the table (its RunStateChanged may be out): the next owner restores a
    # state without these events and skips them.
    clock = Clock()
    events = _batch(_records(_events()))
    table = Table()
    loop = _loop(_processor(table, BlockingTopics()), clock)

    async def stop_mid_batch() -> None:
        task = asyncio.ensure_future(loop.handle(events))
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_mid_batch())
    assert all(e.message.acked for e in events)  # marked so faust's ack skips them


def test_a_fenced_batch_stops_the_worker_without_acknowledging_it() -> None:
    clock = Clock()
    events = _batch(_records(_events()))
    loop = _loop(_processor(Table(), StallingTopics(clock, stall_s=14.0)), clock)
    with pytest.raises(Halted) as stopped:
        asyncio.run(loop.handle(events))
    assert stopped.value.args[0] == EXIT_FENCED
    assert all(e.message.acked for e in events)


def test_a_full_store_retries_the_same_batch_until_space_returns(monkeypatch: Any) -> None:
    async def no_wait(_: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    clock = Clock()
    full, topics = FailingTable(full_for=3), Topics()
    events = _batch(_records(_events()))
    loop = _loop(_processor(full, topics), clock)
    outcomes = asyncio.run(loop.handle(events))
    assert outcomes == ["applied"] * 4
    assert loop.storage_full_retries == 3
    ok, ok_topics = Table(), Topics()
    asyncio.run(_processor(ok, ok_topics).process_batch(_records(_events())))
    assert dict(full) == dict(ok)  # the same state as without the full disk
    assert set(topics.changes) == set(ok_topics.changes)  # copies are byte-identical
    assert not any(e.message.acked for e in events)  # faust acks them, not us


def test_a_full_store_drops_the_batch_once_its_partitions_are_revoked(monkeypatch: Any) -> None:
    owned = Owned()

    async def revoke_while_waiting(_: float) -> None:
        owned.partitions.clear()

    monkeypatch.setattr(asyncio, "sleep", revoke_while_waiting)
    clock = Clock()
    events = _batch(_records(_events()))
    loop = _loop(_processor(FailingTable(full_for=100), Topics()), clock, owned)
    assert asyncio.run(loop.handle(events)) == ["dropped"] * 4
    assert all(e.message.acked for e in events)


def test_a_storage_error_other_than_no_space_stops_the_worker() -> None:
    class Broken(Table):
        def put(self, key: bytes, value: bytes, *, partition: int) -> None:
            raise Exception("Corruption: block checksum mismatch")

    with pytest.raises(Halted) as stopped:
        asyncio.run(
            _loop(_processor(Broken(), Topics()), Clock()).handle(_batch(_records(_events())))
        )
    assert stopped.value.args[0] == EXIT_BATCH_FAILED


def test_storage_full_is_raised_for_enospc() -> None:
    with pytest.raises(StorageFull, match="No space left"):
        asyncio.run(
            _processor(FailingTable(full_for=1), Topics()).process_batch(_records(_events()))
        )


# -- holes: records acked by the consumer but never delivered ---------------------------------


def test_a_hole_is_not_processed_past_and_the_partition_is_sought_back() -> None:
    group = GroupConsumer()
    table, topics = Table(), Topics()
    loop = _loop(_processor(table, topics), Clock(), group=group)
    records = _records(_events())
    assert asyncio.run(loop.handle(_batch(records[:2]))) == ["applied"] * 2
    later = _batch(records[3:])  # offset 2 never arrived: faust skipped and acked it
    assert asyncio.run(loop.handle(later)) == ["held"]
    assert group.seeks == [(0, 2)]
    assert all(e.message.acked for e in later)  # withheld: faust's ack will not count them
    assert loop.marks.get(0) == 2
    # the seek redelivers 2 and 3 (and a stale copy of 1): all processed, the mark moves on
    assert asyncio.run(loop.handle(_batch(records[1:]))) == ["duplicate", "applied", "applied"]
    assert loop.marks.get(0) == 4 and loop.rewinds == {}
    fresh_table, fresh_topics = Table(), Topics()
    asyncio.run(_processor(fresh_table, fresh_topics).process_batch(records))
    assert dict(table) == dict(fresh_table)


def test_records_fetched_before_the_seek_are_held_without_another_seek() -> None:
    group, clock = GroupConsumer(), Clock()
    loop = _loop(_processor(Table(), Topics()), clock, group=group)
    records = _records(_events())
    asyncio.run(loop.handle(_batch(records[:2])))
    for _ in range(5):  # faust's buffers still hold records fetched before the seek
        assert asyncio.run(loop.handle(_batch(records[3:]))) == ["held"]
        clock.now += 0.5
    assert group.seeks == [(0, 2)] and loop.rewinds == {0: 1}
    clock.now += 3.0  # the grace is over and the hole is still there: seek again
    asyncio.run(loop.handle(_batch(records[3:])))
    assert group.seeks == [(0, 2), (0, 2)]


def test_a_hole_that_does_not_close_stops_the_worker_without_acknowledging() -> None:
    group, clock = GroupConsumer(), Clock()
    loop = _loop(_processor(Table(), Topics()), clock, group=group)
    records = _records(_events())
    asyncio.run(loop.handle(_batch(records[:2])))
    for _ in range(3):
        asyncio.run(loop.handle(_batch(records[3:])))
        clock.now += 6.0
    later = _batch(records[3:])
    with pytest.raises(Halted) as stopped:
        asyncio.run(loop.handle(later))
    assert stopped.value.args[0] == EXIT_OFFSET_GAP
    assert group.seeks == [(0, 2)] * 3
    assert all(e.message.acked for e in later)


def test_marks_start_at_the_groups_committed_offset() -> None:
    # Another worker processed partition 0 up to offset 1 and committed 2: a batch from 2 is
    # the continuation, one from 3 has a hole, one from 0 is a redelivery.
    group = GroupConsumer(committed={0: 2})
    loop = _loop(_processor(Table(), Topics()), Clock(), group=group)
    records = _records(_events())
    assert asyncio.run(loop.handle(_batch(records[3:]))) == ["held"]
    assert group.seeks == [(0, 2)]
    assert asyncio.run(loop.handle(_batch(records[:3]))) == ["applied"] * 3
    assert loop.marks.get(0) == 3


def test_records_of_other_partitions_are_processed_beside_a_hole() -> None:
    group = GroupConsumer(committed={0: 0, 1: 0})
    loop = _loop(_processor(Table(), Topics()), Clock(), group=group)
    events = _events()
    batch = _records(events[:2], partition=1) + _records(events[2:], partition=0, start=5)
    assert asyncio.run(loop.handle(_batch(batch))) == ["applied", "applied", "held", "held"]
    assert loop.marks.snapshot() == {0: 0, 1: 2}
    assert group.seeks == [(0, 0)]


# -- monotonic restore ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 63, 64, 65, 300, 2**31, 2**40])
def test_peek_version_reads_what_encode_state_wrote(
    run_state_factory: RunStateFactory, version: int
) -> None:
    for run_id in ("r", "run-" + "x" * 200):
        assert peek_version(encode_state(run_state_factory(run_id=run_id, version=version))) == (
            version
        )


def test_peek_version_of_garbage_is_none() -> None:
    assert peek_version(b"") is None
    assert peek_version(b"\xc3\x01" + bytes(8)) is None
    assert peek_version(b"{}" * 10) is None


def test_restore_keeps_the_newest_version_of_each_key(run_state_factory: RunStateFactory) -> None:
    def v(n: int, run_id: str = "a") -> bytes:
        return encode_state(run_state_factory(run_id=run_id, version=n))

    local = {(0, b"a"): v(5), (0, b"b"): v(1)}
    log = [
        (0, b"a", v(4)),  # stale: older than the store
        (0, b"a", v(6)),
        (0, b"a", v(5)),  # stale: a zombie's record after the owner's v6
        (0, b"b", v(2, "b")),
        (0, b"b", None),  # deleted
        (0, b"b", v(1, "b")),
    ]
    stale: list[tuple[int, int]] = []
    kept = list(
        keep_monotonic(
            log,
            key_value=lambda r: r,
            local=lambda p, k: local.get((p, k)),
            on_stale=lambda _r, got, have: stale.append((got, have)),
        )
    )
    assert [(k, None if x is None else peek_version(x)) for _, k, x in kept] == [
        (b"a", 6),
        (b"b", 2),
        (b"b", None),
        (b"b", 1),
    ]
    assert stale == [(4, 5), (5, 6)]
