"""The commit protocol's steps and failure paths, with a small recording producer.

The broker's side (fencing, read_committed) is covered by the integration tests; here the
order of the calls and what happens to the store on each outcome.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from runstate.runtime.checkpoint import Checkpoint, CheckpointFailed, Fenced
from runstate.runtime.clients import DeliveryReport, Headers
from runstate.runtime.memory_store import MemoryPartitionStore

EVENTS, CHANGELOG, OUT = "events", "changelog", "out"


class Producer:
    """Queues records, assigns offsets and reports deliveries on flush; fails on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.queued: list[tuple[str, int, bytes | None, DeliveryReport | None]] = []
        self.next_offset: dict[tuple[str, int], int] = defaultdict(int)
        self.fail: dict[str, list[KafkaError]] = defaultdict(list)
        self.deliver_error: KafkaError | None = None
        #: raised by flush(), as confluent-kafka does when a fatal error is pending
        self.flush_raises: BaseException | None = None
        self.offsets_sent: list[list[TopicPartition]] = []

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail[call]:
            raise KafkaException(self.fail[call].pop(0))

    def produce(
        self,
        topic: str,
        *,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: DeliveryReport | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.calls.append(f"produce {topic}")
        self.queued.append((topic, max(partition, 0), key, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        self.calls.append("flush")
        if self.flush_raises is not None:
            raise self.flush_raises
        for topic, partition, key, report in self.queued:
            offset = self.next_offset[(topic, partition)]
            self.next_offset[(topic, partition)] += 1
            if report is not None:
                msg = Message(topic=topic, partition=partition, offset=offset, key=key)
                report(self.deliver_error, msg)
        self.queued.clear()
        return 0

    def init_transactions(self, timeout: float = -1) -> None:
        self._maybe_fail("init")

    def begin_transaction(self) -> None:
        self._maybe_fail("begin")

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        self._maybe_fail("send_offsets")
        self.offsets_sent.append(positions)

    def commit_transaction(self, timeout: float = -1) -> None:
        self._maybe_fail("commit")

    def abort_transaction(self, timeout: float = -1) -> None:
        self._maybe_fail("abort")

    def close(self) -> bool:
        return True


class Consumer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.seeks: list[tuple[int, int]] = []

    def consumer_group_metadata(self) -> Any:
        return "group-metadata"

    def seek(self, partition: TopicPartition) -> None:
        self.seeks.append((partition.partition, partition.offset))

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]:
        self.calls.append("consumer commit")
        return offsets


P = TypeVar("P", bound=Producer)


def _checkpoint(
    producer: P | None = None, *, exactly_once: bool = True, **options: Any
) -> tuple[Checkpoint, P, Consumer]:
    """A started checkpoint over the fake producer (a new :class:`Producer` by default) and
    a consumer that records into the same call list; ``options`` go to the checkpoint."""
    made = producer if producer is not None else Producer()
    consumer = Consumer(made.calls)
    cp = Checkpoint(
        made,
        consumer,
        source_topic=EVENTS,
        changelog_topic=CHANGELOG,
        exactly_once=exactly_once,
        timeout_s=0.5,
        **options,
    )
    cp.start()
    return cp, made, consumer  # type: ignore[return-value]


def _work(cp: Checkpoint, store: MemoryPartitionStore, offset: int) -> None:
    cp.transaction(store.partition).set(b"run-1", f"state@{offset}".encode())
    cp.produce(OUT, b"run-1", b"change", partition=store.partition)
    cp.processed(store.partition, offset)


def test_a_checkpoint_commits_then_applies_the_store_with_the_changelog_offset() -> None:
    cp, producer, _ = _checkpoint()
    store = MemoryPartitionStore(2)
    cp.add_partition(2, store, committed=None)
    _work(cp, store, 10)
    assert producer.calls == ["init", "begin", f"produce {OUT}"]  # begun lazily
    assert cp.commit()
    assert producer.calls[3:] == [f"produce {CHANGELOG}", "flush", "send_offsets", "commit"]
    [[position]] = producer.offsets_sent
    assert (position.topic, position.partition, position.offset) == (EVENTS, 2, 11)
    assert store.get(b"run-1") == b"state@10"
    assert store.changelog_offset() == 0
    _work(cp, store, 11)
    assert cp.commit()
    assert store.get(b"run-1") == b"state@11"
    assert store.changelog_offset() == 1


def test_records_that_made_nothing_still_commit_their_offsets() -> None:
    cp, producer, _ = _checkpoint()
    cp.add_partition(0, MemoryPartitionStore(0), committed=5)
    cp.processed(0, 7)
    assert cp.commit()
    assert producer.calls == ["init", "flush", "begin", "send_offsets", "commit"]
    assert cp.commit()  # nothing new: no transaction at all
    assert producer.calls.count("begin") == 1


@pytest.mark.parametrize("failing", ["send_offsets", "commit"])
def test_an_abortable_error_drops_the_overlay_and_rewinds(failing: str) -> None:
    cp, producer, consumer = _checkpoint()
    store = MemoryPartitionStore(1)
    cp.add_partition(1, store, committed=None)
    cp.add_partition(3, MemoryPartitionStore(3), committed=40)
    aborted: list[bool] = []
    cp.on_abort(lambda: aborted.append(True))
    _work(cp, store, 0)
    producer.fail[failing].append(
        KafkaError(KafkaError.ILLEGAL_GENERATION, "generation moved", txn_requires_abort=True)
    )
    assert cp.commit() is False
    assert producer.calls[-1] == "abort"
    assert store.get(b"run-1") is None and store.changelog_offset() is None  # untouched
    assert sorted(consumer.seeks) == [(1, OFFSET_BEGINNING), (3, 40)]
    assert aborted == [True]
    assert not cp.transaction(1)  # the overlay is gone
    _work(cp, store, 0)  # processed again, from the untouched store
    assert cp.commit()
    assert store.get(b"run-1") == b"state@0"


def test_a_failed_delivery_aborts() -> None:
    cp, producer, consumer = _checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=3)
    _work(cp, store, 3)
    producer.deliver_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    assert cp.commit() is False
    assert "send_offsets" not in producer.calls
    assert consumer.seeks == [(0, 3)]
    assert store.changelog_offset() is None


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True),
        KafkaError(KafkaError.PRODUCER_FENCED, "producer fenced"),
    ],
    ids=["fatal", "producer-fenced"],
)
def test_fencing_stops_the_worker_and_leaves_the_store_alone(error: KafkaError) -> None:
    cp, producer, _ = _checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.fail["commit"].append(error)
    with pytest.raises(Fenced, match="fenced"):
        cp.commit()
    assert store.get(b"run-1") is None


def test_a_fatal_error_raised_by_flush_is_fencing() -> None:
    """Found by the fault battery (scenario 2): a zombie's producer, fenced while records
    were queued, made ``flush()`` raise (a ``SystemError`` from the delivery callback, caused
    by the pending fatal ``KafkaException``); the worker died with a traceback and exit 1
    instead of exit 75 with its "restart it" message."""
    cp, producer, _ = _checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    fatal = KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True))
    try:
        raise SystemError("Checkpoint._delivered returned a result with an exception set") from (
            fatal
        )
    except SystemError as exc:
        producer.flush_raises = exc
    with pytest.raises(Fenced, match="fenced"):
        cp.commit()
    assert store.get(b"run-1") is None


def test_a_non_fatal_error_raised_by_flush_aborts() -> None:
    cp, producer, consumer = _checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=3)
    _work(cp, store, 3)
    producer.flush_raises = KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out"))
    assert cp.commit() is False
    assert consumer.seeks == [(0, 3)] and store.get(b"run-1") is None


def test_a_retriable_error_is_retried() -> None:
    cp, producer, _ = _checkpoint()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    producer.fail["commit"].append(KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True))
    assert cp.commit()
    assert producer.calls.count("commit") == 2
    assert store.get(b"run-1") == b"state@0"


def test_at_least_once_applies_the_store_before_committing_offsets() -> None:
    cp, producer, _ = _checkpoint(exactly_once=False)
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    assert cp.commit()
    assert producer.calls == [f"produce {OUT}", f"produce {CHANGELOG}", "flush", "consumer commit"]
    assert store.get(b"run-1") == b"state@0"
    _work(cp, store, 1)
    producer.deliver_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    with pytest.raises(CheckpointFailed):
        cp.commit()
    assert store.get(b"run-1") == b"state@0"


def test_a_checkpoint_is_due_after_its_record_bound_whatever_the_interval() -> None:
    cp, _, _ = _checkpoint(max_records=3, interval_s=60.0, clock=lambda: 0.0)
    store = MemoryPartitionStore(1)
    cp.add_partition(1, store, committed=None)
    assert (cp.due(), cp.records_left()) == (False, 3)
    _work(cp, store, 0)
    _work(cp, store, 1)
    assert (cp.due(), cp.records_left()) == (False, 1)
    _work(cp, store, 2)
    assert (cp.due(), cp.records_left()) == (True, 1)  # never 0: the loop takes one at least
    assert cp.commit()
    assert (cp.due(), cp.records_left(), cp.largest_commit) == (False, 3, 3)
    _work(cp, store, 3)
    _work(cp, store, 4)
    cp.abort("partitions lost")  # an abort drops the records with the interval's writes
    assert (cp.due(), cp.records_left(), cp.largest_commit) == (False, 3, 3)


def test_without_a_record_bound_only_the_interval_makes_a_checkpoint_due() -> None:
    cp, _, _ = _checkpoint(interval_s=60.0, clock=lambda: 0.0)
    store = MemoryPartitionStore(1)
    cp.add_partition(1, store, committed=None)
    for offset in range(100):
        _work(cp, store, offset)
    assert (cp.due(), cp.records_left()) == (False, None)
    assert cp.commit()
    assert cp.largest_commit == 100
