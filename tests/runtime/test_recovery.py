"""Restoring stores from a transactional changelog on the real broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from runstate.errors import RestoreError
from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.runtime.recovery import (
    AssignedRestore,
    ChangelogRestorer,
    KafkaHighWatermarks,
    changelog_consumer,
    restore_partition,
    settled_end,
)
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
from runstate.runtime.store import PartitionStore, Write
from runstate.streams.reader import read_topic
from runstate.streams.topics import TopicSpec, admin_client, ensure_topics
from tests.polling import assert_eventually

pytestmark = pytest.mark.integration

PARTITIONS = 3


class Changelog:
    """A compacted changelog topic and a transactional producer writing to it."""

    def __init__(self, bootstrap: str, topic: str, *, config: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        spec = TopicSpec(topic, PARTITIONS, {"cleanup.policy": "compact", **config})
        ensure_topics(admin_client(bootstrap), [spec])
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx", "linger.ms": 5}
        )
        self.producer.init_transactions(30)

    def transaction(self, partition: int, writes: Sequence[Write], *, commit: bool = True) -> None:
        self.producer.begin_transaction()
        for key, value in writes:
            self.producer.produce(self.topic, key=key, value=value, partition=partition)
        if commit:
            self.producer.commit_transaction(30)
            self._wait_stable(partition)
        else:
            self.producer.flush(30)  # in the log before the abort, so they leave a hole
            self.producer.abort_transaction(30)

    def _wait_stable(self, partition: int) -> None:
        """Until a read_committed reader's end (the last stable offset) reaches the high
        watermark: commit_transaction returns before the commit markers are written."""
        reader = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.topic}-lso",
                "isolation.level": "read_committed",
            }
        )
        tp = TopicPartition(self.topic, partition)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                _, stable = reader.get_watermark_offsets(tp, timeout=10, cached=False)
                high = self._high(partition)
                if stable >= high:
                    return
                time.sleep(0.05)
        finally:
            reader.close()

    def _high(self, partition: int) -> int:
        reader = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.topic}-hw",
                "isolation.level": "read_uncommitted",
            }
        )
        try:
            _, high = reader.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=10, cached=False
            )
            return int(high)
        finally:
            reader.close()


@pytest.fixture
def changelog_factory(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., Changelog]]:
    made: list[Changelog] = []

    def make(**config: str) -> Changelog:
        changelog = Changelog(kafka_bootstrap, unique_name("changelog"), config=config)
        made.append(changelog)
        return changelog

    yield make
    for changelog in made:
        changelog.producer.flush(10)


@pytest.fixture
def rocksdb(tmp_path: Path) -> Iterator[RocksDBStore]:
    store = RocksDBStore(tmp_path / "state", options=RocksDBOptions(block_cache_bytes=1 << 20))
    yield store
    store.close()


def _contents(store: PartitionStore) -> dict[bytes, bytes]:
    return dict(store.items(b"", b"\xff" * 8))


def test_committed_transactions_are_restored(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"run-%03d" % i, b"v1-%d" % i) for i in range(100)])
    log.transaction(0, [(b"run-%03d" % i, b"v2-%d" % i) for i in range(50)])
    log.transaction(1, [(b"other", b"x")])

    store = rocksdb.open(0)
    report = restore_partition(log.bootstrap, log.topic, 0, store, batch_records=64)

    contents = _contents(store)
    assert len(contents) == 100
    assert contents[b"run-000"] == b"v2-0" and contents[b"run-099"] == b"v1-99"
    assert b"other" not in contents
    assert report.records == 150
    assert report.first_offset == 0
    # the last commit marker is accounted for: the store sits at the end, not at a record
    assert report.last_offset == report.end_offset - 1 == store.changelog_offset()
    assert report.end_offset == 152  # 150 records and two commit markers


def test_aborted_transactions_are_not_restored(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a", b"committed"), (b"b", b"committed")])
    log.transaction(0, [(b"a", b"aborted"), (b"c", b"aborted")], commit=False)
    log.transaction(0, [(b"d", b"committed")])
    log.transaction(0, [(b"d", b"aborted"), (b"e", b"aborted")], commit=False)

    store = rocksdb.open(0)
    report = restore_partition(log.bootstrap, log.topic, 0, store, stall_timeout_s=10)

    assert _contents(store) == {b"a": b"committed", b"b": b"committed", b"d": b"committed"}
    assert report.records == 3
    # the log ends with an aborted transaction and its marker: never waited on
    assert store.changelog_offset() == report.end_offset - 1


def test_a_partition_of_only_aborted_records_restores_nothing(
    changelog_factory: Callable[..., Changelog],
) -> None:
    log = changelog_factory()
    log.transaction(2, [(b"a", b"aborted")], commit=False)
    store = MemoryPartitionStore(2)
    report = restore_partition(log.bootstrap, log.topic, 2, store, stall_timeout_s=10)
    assert _contents(store) == {}
    assert report.records == 0
    assert store.changelog_offset() == report.end_offset - 1 == 1


def test_tombstones_delete(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(1, [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")])
    log.transaction(1, [(b"a", None), (b"c", b"2")])
    store = rocksdb.open(1)
    store.apply([(b"b", b"stale")], changelog_offset=-1)  # restored over, never trusted
    restore_partition(log.bootstrap, log.topic, 1, store, batch_records=2)
    assert _contents(store) == {b"b": b"1", b"c": b"2"}


def test_a_kept_store_reads_only_the_tail(
    changelog_factory: Callable[..., Changelog], tmp_path: Path
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"k%04d" % i, b"first") for i in range(500)])
    store = RocksDBStore(tmp_path / "kept")
    first = restore_partition(log.bootstrap, log.topic, 0, store.open(0))
    assert first.records == 500
    store.close()

    log.transaction(0, [(b"k%04d" % i, b"second") for i in range(20)])
    log.transaction(0, [(b"k0000", None)])
    again = RocksDBStore(tmp_path / "kept")
    tail = restore_partition(log.bootstrap, log.topic, 0, again.open(0))
    assert tail.records == 21
    assert first.last_offset is not None
    assert tail.first_offset == first.last_offset + 1
    contents = _contents(again.open(0))
    assert len(contents) == 499
    assert contents[b"k0001"] == b"second" and contents[b"k0499"] == b"first"

    nothing = restore_partition(log.bootstrap, log.topic, 0, again.open(0))
    assert nothing.records == 0 and nothing.first_offset is None
    again.close()


def test_an_empty_partition_restores_at_once(
    changelog_factory: Callable[..., Changelog],
) -> None:
    log = changelog_factory()
    store = MemoryPartitionStore(2)
    started = time.monotonic()
    report = restore_partition(log.bootstrap, log.topic, 2, store, stall_timeout_s=20)
    assert time.monotonic() - started < 5
    assert (report.records, report.end_offset, store.changelog_offset()) == (0, 0, None)


def test_a_standby_tails_without_resetting(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    stores = {p: rocksdb.open(p) for p in range(PARTITIONS)}
    restorer = ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10)
    try:
        log.transaction(0, [(b"a", b"1")])
        log.transaction(1, [(b"b", b"1")])
        reports = restorer.catch_up(stores)
        assert [reports[p].records for p in range(PARTITIONS)] == [1, 1, 0]

        log.transaction(0, [(b"a", b"2"), (b"aa", b"2")])
        log.transaction(2, [(b"c", b"1")], commit=False)
        log.transaction(2, [(b"c", b"2")])
        reports = restorer.catch_up(stores)
        assert [reports[p].records for p in range(PARTITIONS)] == [2, 0, 1]
        assert _contents(stores[0]) == {b"a": b"2", b"aa": b"2"}
        assert _contents(stores[2]) == {b"c": b"2"}
        assert restorer.assigned() == {0, 1, 2}

        reports = restorer.catch_up(stores)
        assert sum(r.records for r in reports.values()) == 0
        restorer.release([1])
        assert restorer.assigned() == {0, 2}
    finally:
        restorer.close()


def test_a_store_ahead_of_its_changelog_is_refused(
    changelog_factory: Callable[..., Changelog],
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a", b"1")])
    store = MemoryPartitionStore(0)
    store.apply([(b"a", b"1")], changelog_offset=500)  # from a deleted, recreated topic
    with pytest.raises(RestoreError, match="drop the partition store"):
        restore_partition(log.bootstrap, log.topic, 0, store)


def test_restore_after_compaction_gives_the_same_store(
    changelog_factory: Callable[..., Changelog],
) -> None:
    log = changelog_factory(
        **{
            "segment.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": "0",
        }
    )
    produced = 0
    for round_ in range(5):
        writes: list[Write] = [(b"k%02d" % i, b"round-%d" % round_) for i in range(40)]
        if round_ == 3:
            writes += [(b"k%02d" % i, None) for i in range(10)]
        log.transaction(0, writes)
        log.transaction(0, [(b"k00", b"aborted")], commit=False)
        produced += len(writes)
        time.sleep(0.2)  # segments roll by time, and only rolled segments are compacted
    before = MemoryPartitionStore(0)
    restore_partition(log.bootstrap, log.topic, 0, before)
    expected = _contents(before)
    assert len(expected) == 40 and expected[b"k05"] == b"round-4"

    def compacted() -> bool:
        log.transaction(0, [(b"roll", b"x")])  # a write after segment.ms rolls the segment
        remaining = sum(1 for _ in read_topic(log.bootstrap, log.topic, partitions=[0]))
        assert remaining < produced / 2, f"{remaining} of {produced} records left"
        return True

    assert_eventually(compacted, timeout_s=60, interval_s=1.0, what="the changelog compacted")
    after = MemoryPartitionStore(0)
    report = restore_partition(log.bootstrap, log.topic, 0, after)
    assert report.records < produced / 2
    assert {k: v for k, v in _contents(after).items() if k != b"roll"} == expected


def test_catching_up_some_partitions_leaves_the_others_where_they_are(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    stores = {p: rocksdb.open(p) for p in range(2)}
    restorer = ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10)
    try:
        restorer.catch_up(stores)
        log.transaction(0, [(b"a", b"1")])
        log.transaction(1, [(b"b%d" % i, b"1") for i in range(30)])
        assert restorer.catch_up({0: stores[0]})[0].records == 1
        assert _contents(stores[1]) == {}
        assert restorer.catch_up({1: stores[1]})[1].records == 30
        assert len(_contents(stores[1])) == 30
    finally:
        restorer.close()


def test_a_missing_topic_fails_within_the_timeout(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    started = time.monotonic()
    with pytest.raises(RestoreError, match="check that the broker is up and the topic exists"):
        restore_partition(
            kafka_bootstrap, unique_name("missing"), 0, MemoryPartitionStore(0), stall_timeout_s=2
        )
    assert time.monotonic() - started < 15


def test_a_followed_partition_whose_store_was_dropped_is_read_again(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"k%d" % i, b"1") for i in range(10)])
    restorer = ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10)
    try:
        assert restorer.catch_up({0: rocksdb.open(0)})[0].records == 10
        rocksdb.drop(0)  # damaged, say: the runtime starts it over
        log.transaction(0, [(b"k0", None)])
        report = restorer.catch_up({0: rocksdb.open(0)})[0]
        assert (report.records, report.first_offset) == (11, 0)
        assert len(_contents(rocksdb.open(0))) == 9
    finally:
        restorer.close()


def test_a_record_budget_stops_a_catch_up_where_the_next_one_goes_on(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a%03d" % i, b"1") for i in range(25)])
    log.transaction(0, [(b"x", b"1")], commit=False)  # a hole the budget may stop beside
    log.transaction(0, [(b"b%03d" % i, b"1") for i in range(25)])
    log.transaction(1, [(b"c%03d" % i, b"1") for i in range(10)])
    stores = {p: rocksdb.open(p) for p in range(2)}
    restorer = ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10)
    try:
        applied = {0: 0, 1: 0}
        for _ in range(60):  # 6 calls of 10 at least; more if a fetch brings fewer
            reports = restorer.catch_up(stores, max_records=10)
            assert sum(r.records for r in reports.values()) <= 10
            for p, report in reports.items():
                applied[p] += report.records
                # keys are unique: a record applied twice or skipped would show here
                assert len(_contents(stores[p])) == applied[p]
            if all(r.caught_up for r in reports.values()):
                break
        assert applied == {0: 50, 1: 10}
        assert len(_contents(stores[0])) == 50 and len(_contents(stores[1])) == 10
        assert b"x" not in _contents(stores[0])
        again = restorer.catch_up(stores, max_records=10)
        assert sum(r.records for r in again.values()) == 0
        assert all(r.caught_up for r in again.values())
    finally:
        restorer.close()


def test_an_assigned_restore_goes_in_slices_to_the_end_it_began_with(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a%03d" % i, b"1") for i in range(25)])
    log.transaction(0, [(b"x", b"1")], commit=False)
    log.transaction(0, [(b"b%03d" % i, b"1") for i in range(25)])
    log.transaction(1, [(b"c%03d" % i, b"1") for i in range(10)])
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10),
        high_marks=KafkaHighWatermarks(log.bootstrap),
        slice_records=10,
    )
    try:
        restore.begin(rocksdb.open(0))
        restore.begin(rocksdb.open(1))
        restore.begin(rocksdb.open(2))
        assert restore.pending == {0, 1, 2}
        finished: dict[int, int] = {}
        late_written = False
        for step in range(60):
            for store in restore.step():
                finished[store.partition] = step
            ends_known = restore.progress().get(0)
            if not late_written and ends_known is not None and ends_known.remaining is not None:
                # written after the restore measured its end (once no changelog transaction
                # was undecided): not the restore's to read
                log.transaction(0, [(b"late", b"1")])
                late_written = True
            if not restore.pending:
                break
        assert late_written
        assert set(finished) == {0, 1, 2}
        assert finished[0] >= 4, finished  # 50 records in slices of 10
        assert {r.partition: r.records for r in restore.reports} == {0: 50, 1: 10, 2: 0}
        assert len(_contents(rocksdb.open(0))) == 50 and b"late" not in _contents(rocksdb.open(0))
        assert restore.restorer.assigned() == set()
    finally:
        restore.restorer.close()


def test_a_cancelled_restore_gives_its_store_back(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a%03d" % i, b"1") for i in range(30)])
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10),
        high_marks=KafkaHighWatermarks(log.bootstrap),
        slice_records=10,
    )
    try:
        store = rocksdb.open(0)
        restore.begin(store)
        restore.step()
        assert restore.pending == {0}
        assert restore.cancel([0, 1]) == [store]
        assert restore.pending == frozenset() and restore.restorer.assigned() == set()
        assert restore.reports == []
    finally:
        restore.restorer.close()


def test_settled_end_waits_while_a_transaction_is_undecided_up_to_the_limit() -> None:
    assert settled_end(10, 10, waited_s=0, limit_s=5) == 10
    assert settled_end(10, 14, waited_s=0, limit_s=5) is None
    assert settled_end(10, 14, waited_s=4.9, limit_s=5) is None
    assert settled_end(10, 14, waited_s=5, limit_s=5) == 10  # a zombie's: aborted by then


def test_a_restore_begun_while_a_changelog_transaction_is_undecided_includes_it(
    changelog_factory: Callable[..., Changelog], rocksdb: RocksDBStore
) -> None:
    """The previous owner's last transaction is committed (its input offsets are visible)
    but its changelog marker not written yet: the restore must wait and include it. An
    open transaction stands in for the undecided one (the last stable offset stays before
    its records until it commits)."""
    log = changelog_factory()
    log.transaction(0, [(b"a%03d" % i, b"1") for i in range(20)])
    log.producer.begin_transaction()
    for i in range(15):
        log.producer.produce(log.topic, key=b"b%03d" % i, value=b"2", partition=0)
    log.producer.flush(30)  # in the log, undecided
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10),
        high_marks=KafkaHighWatermarks(log.bootstrap),
        undecided_wait_s=120,
        slice_records=10,
    )
    try:
        restore.begin(rocksdb.open(0))
        for _ in range(10):
            assert restore.step() == []
            time.sleep(0.1)
        assert restore.pending == {0}  # held: the end is not known while undecided
        log.producer.commit_transaction(30)
        finished = assert_eventually(restore.step, timeout_s=60, what="restore finished")
        assert [s.partition for s in finished] == [0]
        contents = _contents(rocksdb.open(0))
        assert len(contents) == 35 and contents[b"b014"] == b"2"
    finally:
        restore.restorer.close()


def test_a_transaction_left_open_past_the_limit_is_not_waited_for(
    changelog_factory: Callable[..., Changelog],
    rocksdb: RocksDBStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = changelog_factory()
    log.transaction(0, [(b"a%03d" % i, b"1") for i in range(20)])
    log.producer.begin_transaction()
    log.producer.produce(log.topic, key=b"zombie", value=b"z", partition=0)
    log.producer.flush(30)
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(log.bootstrap), log.topic, stall_timeout_s=10),
        high_marks=KafkaHighWatermarks(log.bootstrap),
        undecided_wait_s=1.0,
    )
    try:
        restore.begin(rocksdb.open(0))
        with caplog.at_level(logging.INFO, logger="runstate.runtime.recovery"):
            assert_eventually(restore.step, timeout_s=60, what="restore finished")
        contents = _contents(rocksdb.open(0))
        assert len(contents) == 20 and b"zombie" not in contents
        assert "waiting for it to commit or abort" in caplog.text
        assert "restoring up to 21 without it" in caplog.text  # 20 records, a marker
    finally:
        log.producer.abort_transaction(30)
        restore.restorer.close()
