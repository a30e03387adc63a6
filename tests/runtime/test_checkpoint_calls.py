"""What the commit protocol tells the broker, the operator and the worker, beyond its order.

``test_checkpoint_order.py`` pins the calls of a commit in order; here what goes with them:
the timeout that bounds every call that waits on the broker (an unbounded one would hang a
worker on a broker that stopped answering), the retry of a retriable error until that
timeout and no further, the abort's log line with its cause, the messages a stopped worker
prints, and the bookkeeping an abort or a partition change leaves. Found by mutation testing
(docs/testing.md): each test here fails for a one-line change of ``runtime/checkpoint.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from runstate.runtime.checkpoint import Checkpoint, CheckpointFailed, Fenced
from runstate.runtime.memory_store import MemoryPartitionStore

from .test_checkpoint import CHANGELOG, EVENTS, OUT, Consumer, Producer, _checkpoint, _work
from .test_checkpoint_order import Clock

LOGGER = "runstate.runtime.checkpoint"


class TimeoutProducer(Producer):
    """Records the timeout of every call that waits on the broker."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[tuple[str, float | None]] = []

    def init_transactions(self, timeout: float = -1) -> None:
        self.timeouts.append(("init", timeout))
        super().init_transactions(timeout)

    def flush(self, timeout: float = -1) -> int:
        self.timeouts.append(("flush", timeout))
        return super().flush(timeout)

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float = -1
    ) -> None:
        self.timeouts.append(("send_offsets", timeout))
        super().send_offsets_to_transaction(positions, group_metadata, timeout)

    def commit_transaction(self, timeout: float = -1) -> None:
        self.timeouts.append(("commit", timeout))
        super().commit_transaction(timeout)

    def abort_transaction(self, timeout: float = -1) -> None:
        self.timeouts.append(("abort", timeout))
        super().abort_transaction(timeout)


class ReversingProducer(Producer):
    """Reports deliveries last first (librdkafka reports per partition batch, in any order
    across batches), plus one report without an offset for the changelog's partition 0."""

    def flush(self, timeout: float = -1) -> int:
        self.calls.append("flush")
        reports = []
        for topic, partition, key, report in self.queued:
            offset = self.next_offset[(topic, partition)]
            self.next_offset[(topic, partition)] += 1
            if report is not None:
                reports.append(
                    (report, Message(topic=topic, partition=partition, offset=offset, key=key))
                )
        self.queued.clear()
        for report, msg in reversed(reports):
            report(None, msg)
        if reports:
            reports[0][0](None, Message(topic=CHANGELOG, partition=0))
        return 0


def make(
    producer: Producer | None = None,
    *,
    exactly_once: bool = True,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[Checkpoint, Producer, Consumer]:
    options: dict[str, Any] = {}
    if clock is not None:
        options["clock"] = clock
    if sleep is not None:
        options["sleep"] = sleep
    return _checkpoint(producer, exactly_once=exactly_once, **options)


def worked(
    producer: Producer | None = None,
    *,
    exactly_once: bool = True,
    clock: Clock | None = None,
    sleep: Callable[[float], None] | None = None,
) -> tuple[Checkpoint, Producer, MemoryPartitionStore]:
    cp, producer, _ = make(producer, exactly_once=exactly_once, clock=clock, sleep=sleep)
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)
    return cp, producer, store


def abort_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


# -- every wait on the broker is bounded ---------------------------------------------------


def test_by_default_a_checkpoint_is_exactly_once_and_waits_60_s_at_most_per_call() -> None:
    producer = TimeoutProducer()
    cp = Checkpoint(
        producer, Consumer(producer.calls), source_topic=EVENTS, changelog_topic=CHANGELOG
    )
    cp.start()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=None)
    _work(cp, store, 0)

    assert cp.commit()

    assert "begin" in producer.calls  # a transaction: exactly-once is the default
    # flush waits in slices of at most 1 s (so a broker outage shows on /health), up to 60 s
    assert producer.timeouts == [
        ("init", 60.0),
        ("flush", 1.0),
        ("send_offsets", 60.0),
        ("commit", 60.0),
    ]


def test_the_abort_and_the_closing_flush_are_bounded_by_the_timeout_too() -> None:
    cp, producer, _ = worked(TimeoutProducer())
    assert isinstance(producer, TimeoutProducer)
    producer.timeouts.clear()

    cp.abort("partitions lost")
    cp.close()

    assert producer.timeouts == [("abort", 0.5), ("flush", 0.5)]


# -- retries -------------------------------------------------------------------------------


def test_a_retriable_error_is_retried_every_100_ms_until_the_timeout_then_aborted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += 0.25  # a slow machine: each pause takes longer than asked

    cp, producer, store = worked(clock=clock, sleep=sleep)
    slow = KafkaError(KafkaError._TIMED_OUT, "coordinator slow", retriable=True)
    producer.fail["commit"].extend([slow] * 10)

    assert cp.commit() is False

    # attempts at 0, 0.25 and 0.5 s: the one at the deadline (0.5 s) is the last
    assert producer.calls.count("commit") == 3
    assert sleeps == [0.1, 0.1]
    assert producer.calls[-1] == "abort"
    assert store.get(b"run-1") is None


def test_an_error_neither_retriable_nor_abortable_aborts_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cp, producer, store = worked()
    producer.fail["send_offsets"].append(KafkaError(KafkaError._STATE, "bad state"))

    with caplog.at_level(logging.WARNING, LOGGER):
        assert cp.commit() is False

    assert producer.calls.count("send_offsets") == 1
    assert abort_lines(caplog) == [
        "aborting the checkpoint: bad state; records are processed again"
    ]
    assert store.get(b"run-1") is None


def test_a_begin_refused_outright_while_producing_aborts_the_checkpoint() -> None:
    cp, producer, _ = make()
    store = MemoryPartitionStore(0)
    cp.add_partition(0, store, committed=0)
    producer.fail["begin"].append(KafkaError(KafkaError._STATE, "cannot begin"))
    cp.produce(OUT, b"k", b"v")  # the error is remembered, the record dropped
    cp.processed(0, 0)

    assert cp.commit() is False
    assert "send_offsets" not in producer.calls and cp.aborts == 1


def test_a_fatal_error_of_any_code_is_fencing() -> None:
    cp, producer, store = worked()
    producer.fail["commit"].append(KafkaError(KafkaError._STATE, "idempotence broken", fatal=True))

    with pytest.raises(Fenced, match="another instance owns its work now: restart it"):
        cp.commit()
    assert store.get(b"run-1") is None


# -- what the operator reads ---------------------------------------------------------------


def test_an_abort_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    cp, producer, store = worked()
    with caplog.at_level(logging.WARNING, LOGGER):
        cp.abort("partitions lost")
        _work(cp, store, 0)
        producer.fail["commit"].append(
            KafkaError(KafkaError.ILLEGAL_GENERATION, "generation moved", txn_requires_abort=True)
        )
        assert cp.commit() is False

    assert abort_lines(caplog) == [
        "aborting the checkpoint: partitions lost; records are processed again",
        "aborting the checkpoint: generation moved; records are processed again",
    ]


@pytest.mark.parametrize(
    ("fail", "cause"),
    [
        ("deliver", "too large"),
        ("flush", "flush timed out"),
    ],
)
def test_an_undelivered_interval_logs_the_delivery_error(
    fail: str, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    cp, producer, _ = worked()
    if fail == "deliver":
        producer.deliver_error = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, cause)
    else:
        producer.flush_raises = KafkaException(KafkaError(KafkaError._TIMED_OUT, cause))

    with caplog.at_level(logging.WARNING, LOGGER):
        assert cp.commit() is False

    assert abort_lines(caplog) == [f"aborting the checkpoint: {cause}; records are processed again"]


def test_a_partition_no_longer_assigned_is_logged_not_rewound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class LostConsumer(Consumer):
        def seek(self, partition: TopicPartition) -> None:
            raise KafkaException(KafkaError(KafkaError._STATE, "Erroneous state"))

    producer = Producer()
    cp = Checkpoint(
        producer, LostConsumer(producer.calls), source_topic=EVENTS, changelog_topic=CHANGELOG
    )
    cp.add_partition(4, MemoryPartitionStore(4), committed=2)

    with caplog.at_level(logging.INFO, LOGGER):
        cp.rewind()

    [line] = abort_lines(caplog)
    assert line.startswith("not rewinding partition 4: ") and "Erroneous state" in line


def test_a_worker_that_cannot_start_transactions_says_why() -> None:
    producer = Producer()
    producer.fail["init"].append(KafkaError(KafkaError._TIMED_OUT, "no coordinator"))
    cp = Checkpoint(
        producer, Consumer(producer.calls), source_topic=EVENTS, changelog_topic=CHANGELOG
    )

    with pytest.raises(Fenced, match=r"could not initialise transactions: .*no coordinator"):
        cp.start()


def test_at_least_once_failures_say_what_failed() -> None:
    cp, producer, _ = worked(exactly_once=False)
    producer.flush_raises = KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
    with pytest.raises(CheckpointFailed, match="outputs not delivered: flush timed out"):
        cp.commit()

    class RefusingConsumer(Consumer):
        def commit(self, *, offsets: list[TopicPartition], asynchronous: Any) -> Any:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalancing"))

    producer = Producer()
    alo = Checkpoint(
        producer,
        RefusingConsumer(producer.calls),
        source_topic=EVENTS,
        changelog_topic=CHANGELOG,
        exactly_once=False,
    )
    store = MemoryPartitionStore(0)
    alo.add_partition(0, store, committed=None)
    _work(alo, store, 0)
    with pytest.raises(CheckpointFailed, match=r"committing offsets failed: .*rebalancing"):
        alo.commit()


def test_a_fatal_delivery_error_is_fencing_with_its_cause() -> None:
    cp, producer, store = worked()
    producer.deliver_error = KafkaError(KafkaError._FENCED, "fenced while delivering", fatal=True)

    with pytest.raises(Fenced, match="the producer is fenced or failed: fenced while delivering"):
        cp.commit()
    assert store.get(b"run-1") is None


def test_an_error_from_flush_that_is_not_kafkas_propagates() -> None:
    cp, producer, _ = worked()
    producer.flush_raises = SystemError()

    with pytest.raises(SystemError):
        cp.commit()


# -- bookkeeping ---------------------------------------------------------------------------


def test_after_an_abort_the_next_interval_begins_a_new_transaction() -> None:
    cp, producer, store = worked()
    assert cp.committed_at is None  # never committed yet

    cp.abort("partitions lost")
    _work(cp, store, 0)
    cp.abort("partitions lost again")
    producer.calls.clear()
    _work(cp, store, 0)
    assert cp.commit()

    assert producer.calls[0] == "begin"
    assert cp.aborts == 2
    assert store.get(b"run-1") == b"state@0"


def test_the_store_gets_the_highest_changelog_offset_whatever_the_report_order() -> None:
    cp, _, store = worked(ReversingProducer())
    for key in (b"a", b"b"):
        cp.transaction(0).set(key, b"v")

    assert cp.commit()

    assert store.changelog_offset() == 2  # three keys at 0..2; the report without offset ignored


def test_the_overlay_reads_the_committed_store_beneath_it() -> None:
    cp, _, _ = worked()
    assert cp.commit()

    assert cp.transaction(0).get(b"run-1") == b"state@0"


def test_partitions_are_taken_on_and_given_up_with_their_stores() -> None:
    cp, _, _ = make()
    stores = {p: MemoryPartitionStore(p) for p in (0, 1)}
    for p, store in stores.items():
        cp.add_partition(p, store, committed=None)

    assert cp.committed_store(1) is stores[1]
    assert cp.committed_store(7) is None
    assert cp.remove_partition(1) is stores[1]
    assert cp.remove_partition(1) is None
    assert cp.committed_store(1) is None
    assert cp.partitions == {0}
