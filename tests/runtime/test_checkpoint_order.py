"""The commit protocol's order, step by step, crash points included; and its bookkeeping.

``test_checkpoint.py`` has the failure paths; here every call of a commit in its place (the
kill tests stop the process at these crash points, so their names and order are part of the
protocol), what the offsets and the group metadata are, and what a commit leaves behind.
The broker's side (fencing, read_committed) is proven by the integration tests.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from runstate.runtime import checkpoint as checkpoint_module
from runstate.runtime.checkpoint import BrokerLost, Checkpoint, CheckpointFailed, Fenced
from runstate.runtime.fault_hooks import CrashPoints
from runstate.runtime.memory_store import MemoryPartitionStore
from tests.polling import assert_eventually

from .test_checkpoint import CHANGELOG, EVENTS, OUT, Consumer, Producer, _checkpoint, _work


class RecordingCrashPoints(CrashPoints):
    """Writes each crash point passed into the producer's call list; never exits."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__("")
        self.calls = calls

    def reached(self, point: str) -> None:
        self.calls.append(f"crash {point}")


class GroupProducer(Producer):
    """Also records the group metadata sent with the offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: list[Any] = []

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        self.metadata.append(group_metadata)
        super().send_offsets_to_transaction(positions, group_metadata, timeout)


class SeekRefusingConsumer(Consumer):
    """A consumer that lost partition 1: seeking it raises, as confluent-kafka does."""

    def seek(self, partition: TopicPartition) -> None:
        if partition.partition == 1:
            raise KafkaException(KafkaError(KafkaError._STATE, "not assigned"))
        super().seek(partition)


class OffsetsConsumer(Consumer):
    """Also records the offsets of each at-least-once commit."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__(calls)
        self.committed: list[list[TopicPartition]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: Any) -> list[TopicPartition]:
        self.committed.append(offsets)
        assert asynchronous is False
        return super().commit(offsets=offsets, asynchronous=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def checkpoint(
    *, exactly_once: bool = True, consumer_class: type[Consumer] = Consumer
) -> tuple[Checkpoint, GroupProducer, Consumer, Clock]:
    producer = GroupProducer()
    consumer = consumer_class(producer.calls)
    clock = Clock()
    cp = Checkpoint(
        producer,
        consumer,
        source_topic=EVENTS,
        changelog_topic=CHANGELOG,
        exactly_once=exactly_once,
        timeout_s=0.5,
        crash_points=RecordingCrashPoints(producer.calls),
        clock=clock,
    )
    cp.start()
    producer.calls.clear()
    return cp, producer, consumer, clock


def positions(sent: list[TopicPartition]) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, tp.offset) for tp in sent]


def test_an_exactly_once_commit_calls_each_step_in_order() -> None:
    cp, producer, _, _ = checkpoint()
    stores = {p: MemoryPartitionStore(p) for p in (3, 1, 2)}
    for p, store in stores.items():
        cp.add_partition(p, store, committed=None)
    _work(cp, stores[3], 30)
    _work(cp, stores[1], 10)

    assert cp.commit()

    assert producer.calls == [
        "begin",
        f"produce {OUT}",
        f"produce {OUT}",
        f"produce {CHANGELOG}",
        f"produce {CHANGELOG}",
        "crash after_produce",
        "flush",
        "send_offsets",
        "crash before_commit",
        "commit",
        "crash after_commit",
        "crash after_apply",
    ]
    # Only the partitions that processed something, in partition order, at the next offset.
    assert [positions(sent) for sent in producer.offsets_sent] == [
        [(EVENTS, 1, 11), (EVENTS, 3, 31)]
    ]
    assert producer.metadata == ["group-metadata"]
    assert (cp.committed_offset(1), cp.committed_offset(2), cp.committed_offset(3)) == (
        11,
        None,
        31,
    )
    assert (cp.commits, cp.aborts) == (1, 0)
    assert cp.committed_at is not None


def test_the_next_interval_begins_a_new_transaction_and_sends_only_new_positions() -> None:
    cp, producer, _, _ = checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    assert cp.commit()
    producer.calls.clear()

    assert cp.commit()  # nothing since: no transaction, no offsets
    assert producer.calls == []
    _work(cp, store, 1)
    assert cp.commit()

    assert producer.calls[0] == "begin"
    assert [positions(sent) for sent in producer.offsets_sent] == [
        [(EVENTS, 0, 1)],
        [(EVENTS, 0, 2)],
    ]
    assert cp.commits == 2


def test_an_at_least_once_commit_applies_the_store_then_commits_the_offsets() -> None:
    cp, producer, consumer, _ = checkpoint(exactly_once=False, consumer_class=OffsetsConsumer)
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=4)
    cp.add_partition(1, MemoryPartitionStore(1), committed=None)
    _work(cp, store, 4)

    assert cp.commit()

    assert producer.calls == [
        f"produce {OUT}",
        f"produce {CHANGELOG}",
        "crash after_produce",
        "flush",
        "crash before_commit",
        "consumer commit",
        "crash after_commit",
        "crash after_apply",
    ]
    assert store.get(b"run-1") == b"state@4"
    assert cp.committed_offset(0) == 5
    assert isinstance(consumer, OffsetsConsumer)
    assert [positions(offsets) for offsets in consumer.committed] == [[(EVENTS, 0, 5)]]


def test_a_checkpoint_is_due_once_its_interval_has_passed_since_the_last() -> None:
    cp, _, _, clock = checkpoint()

    assert not cp.due() and cp.time_left() == pytest.approx(0.1)
    clock.now += 0.05
    assert not cp.due() and cp.time_left() == pytest.approx(0.05)
    clock.now += 0.05
    assert cp.due() and cp.time_left() == 0.0
    clock.now += 1
    assert cp.time_left() == 0.0
    assert cp.commit()
    assert not cp.due() and cp.time_left() == pytest.approx(0.1)


def test_rewind_seeks_every_partition_it_still_has() -> None:
    cp, _, consumer, _ = checkpoint(consumer_class=SeekRefusingConsumer)
    for p, committed in [(0, None), (1, 7), (2, 9)]:
        cp.add_partition(p, MemoryPartitionStore(p), committed=committed)

    cp.rewind()

    assert consumer.seeks == [(0, OFFSET_BEGINNING), (2, 9)]


def test_an_abort_outside_a_transaction_does_not_call_the_broker() -> None:
    cp, producer, consumer, _ = checkpoint()
    cp.add_partition(0, MemoryPartitionStore(0), committed=3)
    cp.processed(0, 5)

    cp.abort("partitions lost")

    assert "abort" not in producer.calls
    assert consumer.seeks == [(0, 3)]
    assert cp.aborts == 1
    assert cp.commit()  # the processed position was dropped: nothing to commit
    assert producer.offsets_sent == []


def test_an_abort_the_broker_refuses_is_fencing() -> None:
    cp, producer, _, _ = checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.fail["abort"].append(KafkaError(KafkaError._FENCED, "fenced"))

    with pytest.raises(Fenced, match="could not abort the transaction"):
        cp.abort("partitions lost")


class QueueingProducer(GroupProducer):
    """A producer whose local queue is full once, or that refuses a produce, on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.full_once = False
        self.produce_error: KafkaError | None = None
        self.polls: list[float] = []
        self.produced: list[tuple[str, int, Any]] = []
        self.records: list[tuple[str, bytes | None, bytes | None]] = []
        self.left = 0

    def produce(self, topic: str, **kw: Any) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        if self.produce_error is not None:
            raise KafkaException(self.produce_error)
        self.produced.append((topic, kw["partition"], kw["headers"]))
        self.records.append((topic, kw["key"], kw["value"]))
        super().produce(topic, **kw)

    def poll(self, timeout: float = -1) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, timeout: float = -1) -> int:
        super().flush(timeout)
        return self.left


def queueing(*, exactly_once: bool = True) -> tuple[Checkpoint, QueueingProducer, Consumer]:
    return _checkpoint(QueueingProducer(), exactly_once=exactly_once)


def test_a_full_queue_is_served_then_the_record_produced_with_its_headers() -> None:
    cp, producer, _ = queueing()
    producer.full_once = True

    cp.produce(OUT, b"k", b"v", headers=[("trace", b"t1")])
    cp.produce(OUT, b"k", b"v", partition=4)

    assert producer.polls == [0.05]
    assert producer.produced == [(OUT, -1, [("trace", b"t1")]), (OUT, 4, None)]


def test_a_produce_the_producer_refuses_aborts_the_checkpoint() -> None:
    cp, producer, consumer = queueing()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=2)
    producer.produce_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    cp.produce(OUT, b"k", b"v")
    cp.processed(0, 2)

    assert cp.commit() is False
    assert consumer.seeks == [(0, 2)]
    assert "send_offsets" not in producer.calls


def test_a_produce_that_finds_the_producer_fenced_stops_the_worker() -> None:
    cp, producer, _ = queueing()
    producer.produce_error = KafkaError(KafkaError._FENCED, "fenced", fatal=True)

    with pytest.raises(Fenced, match="the producer is fenced or failed"):
        cp.produce(OUT, b"k", b"v")


def test_records_left_undelivered_by_flush_abort_or_fail() -> None:
    cp, producer, _ = queueing()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=0)
    _work(cp, store, 0)
    producer.left = 2
    assert cp.commit() is False
    assert store.get(b"run-1") is None

    alo, producer, _ = queueing(exactly_once=False)
    alo.add_partition(0, store, committed=0)
    _work(alo, store, 0)
    producer.left = 2
    with pytest.raises(CheckpointFailed, match="2 records undelivered"):
        alo.commit()


def test_a_begin_the_broker_refuses_is_remembered_and_aborts_the_checkpoint() -> None:
    cp, producer, consumer = queueing()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=0)
    producer.fail["begin"].append(
        KafkaError(KafkaError._STATE, "cannot begin", txn_requires_abort=True)
    )
    cp.produce(OUT, b"k", b"v")
    cp.processed(0, 0)

    assert cp.commit() is False
    assert consumer.seeks == [(0, 0)]
    assert cp.aborts == 1


def test_the_store_gets_the_highest_changelog_offset_of_its_partition() -> None:
    cp, producer, _ = queueing()
    stores = {p: MemoryPartitionStore(p) for p in (0, 1)}
    for p, store in stores.items():
        cp.add_partition(p, store, committed=None)
        producer.next_offset[(CHANGELOG, p)] = 10 * (p + 1)
    for key in (b"a", b"b", b"c"):
        cp.transaction(0).set(key, b"v")
    cp.transaction(1).set(b"a", b"v")
    cp.produce(OUT, b"a", b"v", partition=0)  # another topic's offsets are not the store's
    producer.next_offset[(OUT, 0)] = 99
    cp.processed(0, 0)

    assert cp.commit()

    assert (stores[0].changelog_offset(), stores[1].changelog_offset()) == (12, 20)


def test_outputs_and_changelog_records_carry_their_keys_and_values() -> None:
    cp, producer, _ = queueing()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    cp.produce(OUT, b"out-key", b"out-value", partition=0)
    cp.transaction(0).set(b"run-1", b"state")
    cp.processed(0, 0)

    assert cp.commit()

    assert producer.records == [(OUT, b"out-key", b"out-value"), (CHANGELOG, b"run-1", b"state")]


# --- a broker outage ---------------------------------------------------------------------


def outage_checkpoint(
    *, outage_s: float = 60.0
) -> tuple[Checkpoint, GroupProducer, list[GroupProducer], Clock]:
    """A checkpoint whose sleeps advance its clock, with a factory of fresh producers."""
    producer = GroupProducer()
    clock = Clock()
    made: list[GroupProducer] = []

    def sleep(seconds: float) -> None:
        clock.now += seconds

    def factory() -> GroupProducer:
        made.append(GroupProducer())
        return made[-1]

    cp = Checkpoint(
        producer,
        Consumer(producer.calls),
        source_topic=EVENTS,
        changelog_topic=CHANGELOG,
        timeout_s=0.5,
        outage_s=outage_s,
        producer_factory=factory,
        clock=clock,
        sleep=sleep,
    )
    cp.start()
    producer.calls.clear()
    return cp, producer, made, clock


def test_an_abort_is_retried_while_the_broker_is_unreachable() -> None:
    cp, producer, made, _ = outage_checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.deliver_error = KafkaError(KafkaError._MSG_TIMED_OUT, "Message timed out")
    timed_out = KafkaError(KafkaError._TIMED_OUT, "coordinator unreachable", retriable=True)
    producer.fail["abort"] += [timed_out, timed_out, timed_out]

    assert cp.commit() is False  # aborted, not fenced: the records are processed again

    assert producer.calls.count("abort") == 4
    assert cp.waiting_on is None and cp.aborts == 1 and made == []
    producer.deliver_error = None
    _work(cp, store, 0)
    assert cp.commit() is True


def test_a_fence_after_the_broker_was_unreachable_renews_the_producer() -> None:
    cp, producer, made, _ = outage_checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.fail["commit"].append(
        KafkaError(KafkaError._TIMED_OUT, "coordinator unreachable", retriable=True)
    )
    producer.fail["commit"].append(KafkaError(KafkaError.PRODUCER_FENCED, "epoch bumped"))

    with pytest.raises(BrokerLost, match="broker was unreachable"):
        cp.commit()
    cp.renew_producer()

    assert len(made) == 1 and made[0].calls == ["init"]
    assert cp.aborts == 1 and cp.waiting_on is None
    _work(cp, store, 0)
    assert cp.commit() is True
    assert "commit" in made[0].calls and store.get(b"run-1") == b"state@0"


def test_a_fence_with_the_broker_reachable_is_not_renewed() -> None:
    cp, producer, made, _ = outage_checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.fail["commit"].append(KafkaError(KafkaError.PRODUCER_FENCED, "another instance"))

    with pytest.raises(Fenced) as raised:
        cp.commit()
    assert not isinstance(raised.value, BrokerLost)
    assert made == []


def test_an_abort_failing_past_the_outage_limit_is_fenced() -> None:
    cp, producer, _, clock = outage_checkpoint(outage_s=10.0)
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    timed_out = KafkaError(KafkaError._TIMED_OUT, "coordinator unreachable", retriable=True)
    producer.fail["abort"] += [timed_out] * 100

    with pytest.raises(Fenced, match=r"failed for 1[0-9]s"):
        cp.abort("partitions lost")
    assert 10.0 < clock.now < 20.0


class WedgedProducer(GroupProducer):
    """``commit_transaction`` never returns (until released), as seen after a broker restart."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.closed = False

    def commit_transaction(self, timeout: float = -1) -> None:
        self.calls.append("commit")
        self.release.wait(30)

    def close(self) -> bool:
        self.closed = True
        return True


def test_a_wedged_transactional_call_is_left_behind_for_a_new_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint_module, "WEDGED_MARGIN_S", 0.2)
    wedged = WedgedProducer()
    made: list[GroupProducer] = []

    def factory() -> GroupProducer:
        made.append(GroupProducer())
        return made[-1]

    cp = Checkpoint(
        wedged,
        Consumer(wedged.calls),
        source_topic=EVENTS,
        changelog_topic=CHANGELOG,
        timeout_s=0.3,
        producer_factory=factory,
    )
    cp.start()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    try:
        with pytest.raises(BrokerLost, match="did not return within"):
            cp.commit()
        cp.renew_producer()
        assert not wedged.closed  # closing it would hang behind the wedged call
        _work(cp, store, 0)
        assert cp.commit() is True
        assert made[0].calls[0] == "init" and "commit" in made[0].calls
    finally:
        wedged.release.set()


def test_a_broker_call_without_an_answer_says_so_while_it_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``waiting_on`` names a transactional call the broker has not answered within
    ``SLOW_CALL_S``, while it still waits: the health process tells a loop waiting for the
    broker (200, degraded) from a stuck one (503)."""
    monkeypatch.setattr(checkpoint_module, "SLOW_CALL_S", 0.01)
    slow = WedgedProducer()
    cp = Checkpoint(
        slow, Consumer(slow.calls), source_topic=EVENTS, changelog_topic=CHANGELOG, timeout_s=60
    )
    cp.start()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    committed: list[bool] = []
    thread = threading.Thread(target=lambda: committed.append(cp.commit()))
    thread.start()
    try:
        assert_eventually(
            lambda: "no answer from the broker" in (cp.waiting_on or ""),
            timeout_s=30,
            what="waiting_on set while commit_transaction waits",
        )
        assert committed == []
    finally:
        slow.release.set()
        thread.join(30)
    assert committed == [True] and cp.waiting_on is None
