"""Restore partition stores from their changelog, and keep standbys caught up.

A partition store reflects its changelog up to :meth:`PartitionStore.changelog_offset`;
restoring reads from the next offset (or the beginning) to the end of the partition and
applies the records in large batches (one RocksDB write per batch, with the offset reached).

The end is where a ``read_committed`` consumer stops: the last stable offset. The changelog is
written in Kafka transactions, so the log holds commit markers and records of aborted
transactions that the consumer never returns: offsets have gaps, and the last record
returned is usually not ``end - 1``. Restoring therefore watches the consumer's *position*
(which moves past markers and aborted records) instead of waiting for a record at
``end - 1``, and records ``end - 1`` as the store's offset once the position got there, so a
kept store that is up to date reads nothing at all next time.

A restore of a newly assigned partition ends only where no transaction is undecided: the
last stable offset equals the high watermark (:func:`settled_end`). The previous owner's
``commit_transaction`` returns once the coordinator decided; the coordinator then writes the
commit markers partition by partition, so the marker of ``__consumer_offsets`` (which makes
the committed input offset visible to the new owner) can land before the changelog's. A
restore that stopped at the changelog's last stable offset then would miss that
transaction's state changes while the new owner goes on from the input offset after them:
a lost update. Waiting until the changelog has no undecided transaction closes that window;
a transaction a zombie left open is aborted by the broker within ``transaction.timeout.ms``,
so the wait is bounded by it, and past the bound the restore ends at the last stable offset
with a warning (the open transaction can no longer commit).

A kept store may only resume if it is younger than the topic's ``delete.retention.ms``:
compaction drops tombstones after that long, and a store that missed a tombstone would keep
the deleted key forever. Callers drop (and fully restore) stores older than that.

:class:`ChangelogRestorer` keeps its consumer between calls: a standby calls
:meth:`~ChangelogRestorer.catch_up` again and again, and each call continues where the last
stopped (no seek, no reset) up to the end as it is then. With ``max_records`` a call stops
after that many records (every partition's store then reflects exactly what was read), so a
caller on the poll loop's thread bounds the work of one call; the next call goes on from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from runstate.errors import RestoreError
from runstate.runtime.store import PartitionStore, Write
from runstate.streams import clients

__all__ = [
    "DEFAULT_SLICE_RECORDS",
    "AssignedRestore",
    "ChangelogRestorer",
    "HighWatermarks",
    "KafkaHighWatermarks",
    "PartitionRestorer",
    "RestoreProgress",
    "RestoreReport",
    "changelog_consumer",
    "restore_partition",
    "settled_end",
]

log = logging.getLogger(__name__)

#: Records per store write (and per consume call): large enough that RocksDB's per-batch
#: cost stays small, small enough that one write holds the GIL only a few milliseconds
#: (rocksdict keeps it for the whole write: about 25 ms per 20,000 records, which the query
#: API's thread, ``/health`` among it, waits out).
DEFAULT_BATCH_RECORDS = 5_000


@dataclass(frozen=True)
class RestoreReport:
    """What one catch-up of one partition did.

    Attributes:
        partition: the changelog partition.
        records: changelog records applied (tombstones included).
        first_offset: offset of the first record applied, None when none was.
        last_offset: the store's changelog offset afterwards (None: the log is still empty).
        end_offset: the partition's end (last stable offset) the catch-up read up to.
        seconds: wall time, including the wait for the broker.
        caught_up: the store reached ``end_offset`` (False: the call's record budget ran out
            first; call again).
    """

    partition: int
    records: int
    first_offset: int | None
    last_offset: int | None
    end_offset: int
    seconds: float
    caught_up: bool = True

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def changelog_consumer(bootstrap_servers: str, **overrides: Any) -> Consumer:
    """A consumer for restoring: assigned (never subscribed), read_committed, no commits.

    The store's own offset is the restore position, so nothing is committed to Kafka; the
    group id only satisfies the client. Fetches are large because a restore reads a whole
    partition as fast as it can.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": "runstate-restore",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "fetch.max.bytes": 64 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        # A fetch waiting for new records holds the connection, and the end-offset query of
        # the next catch-up waits behind it: keep that wait short for tailing standbys.
        "fetch.wait.max.ms": 50,
    }
    config.update(overrides)
    return clients.consumer(config)


@dataclass
class _Progress:
    """One partition during one catch-up."""

    store: PartitionStore
    start: int
    end: int
    started: float
    writes: list[Write] = field(default_factory=list)
    records: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    done: bool = False


class ChangelogRestorer:
    """Catches partition stores up with one changelog topic, through one assigned consumer.

    Give it the consumer (see :func:`changelog_consumer`) so tests and the runtime choose its
    settings; the restorer assigns and unassigns partitions but never subscribes or commits.
    Not thread-safe.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        *,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        stall_timeout_s: float = 30.0,
        poll_timeout_s: float = 0.05,
    ) -> None:
        """
        Args:
            consumer: an unsubscribed, read_committed consumer; the restorer owns its
                assignment from now on.
            topic: the changelog topic.
            batch_records: records per :meth:`PartitionStore.apply`.
            stall_timeout_s: how long the position may stay still before giving up (the
                whole restore may take much longer, as long as it moves).
            poll_timeout_s: the wait of one consume call.
        """
        self._consumer = consumer
        self._topic = topic
        self._batch_records = batch_records
        self._stall_timeout_s = stall_timeout_s
        self._poll_timeout_s = poll_timeout_s
        #: partition -> the next offset the consumer will return for it (its position).
        self._next: dict[int, int] = {}

    @property
    def topic(self) -> str:
        return self._topic

    def assigned(self) -> set[int]:
        return set(self._next)

    def catch_up(
        self,
        stores: Mapping[int, PartitionStore],
        *,
        max_records: int | None = None,
        ends: Mapping[int, int] | None = None,
    ) -> dict[int, RestoreReport]:
        """Bring each store (by changelog partition) up to its partition's current end.

        A store with no offset is read from the beginning; a store the consumer already
        follows continues without a seek. Records of aborted transactions never reach a
        store; tombstones delete. With ``max_records``, stop once that many records (of all
        partitions together) were read: each store is left at the last offset it was given,
        and its report says ``caught_up=False`` if it has not reached the end. ``ends``
        gives the end of partitions the consumer follows, measured by an earlier call (a
        restore that reads its partitions, in slices, up to where they ended when it
        began): those are not asked of the broker again.

        Raises:
            RestoreError: a partition made no progress for ``stall_timeout_s`` (broker gone,
                partition without a leader), the changelog is shorter than the store claims
                (topic recreated: drop the store), or the broker refused the read.
            StorageFull: a store ran out of disk; what was applied before stays applied.
        """
        progress: dict[int, _Progress] = {}
        started = time.monotonic()
        known = ends or {}
        for partition, store in stores.items():
            # every end first, then the assignments: once a partition is assigned, its
            # fetches hold the connection and each further end query waits behind one
            if partition in known and partition in self._next:
                # followed: the consumer continues at its position, the low mark is moot
                low, end = 0, known[partition]
            elif partition in known:
                low, end = self._watermarks(partition)[0], known[partition]
            else:
                low, end = self._watermarks(partition)
            progress[partition] = self._measure(store, started, low, end)
        for partition, p in progress.items():
            self._position(partition, p)
        self._read(progress, max_records)
        return {
            partition: RestoreReport(
                partition=partition,
                records=p.records,
                first_offset=p.first_offset,
                last_offset=p.store.changelog_offset(),
                end_offset=p.end,
                seconds=time.monotonic() - p.started,
                caught_up=p.done,
            )
            for partition, p in progress.items()
        }

    def stable_end(self, partition: int) -> int:
        """The partition's last stable offset (where a read_committed reader stops now).

        Raises:
            RestoreError: the broker did not answer within ``stall_timeout_s``.
        """
        return self._watermarks(partition)[1]

    def release(self, partitions: list[int]) -> None:
        """Stop following ``partitions`` (the partition moved away, or its store closed)."""
        owned = [p for p in partitions if p in self._next]
        if owned:
            self._consumer.incremental_unassign([TopicPartition(self._topic, p) for p in owned])
        for p in owned:
            del self._next[p]

    def close(self) -> None:
        """Close the consumer (nothing to commit)."""
        self._next.clear()
        self._consumer.close()

    def _measure(self, store: PartitionStore, started: float, low: int, end: int) -> _Progress:
        stored = store.changelog_offset()
        start = max(low, stored + 1) if stored is not None else low
        if stored is not None and stored >= end:
            raise RestoreError(
                f"partition {store.partition} store is at changelog offset {stored} but "
                f"{self._topic} ends at {end}: the topic was recreated or truncated; drop the "
                "partition store and restore it from scratch"
            )
        return _Progress(store=store, start=start, end=end, started=started, done=start >= end)

    def _position(self, partition: int, p: _Progress) -> None:
        """Assign the partition at the store's next offset, or seek there if it moved."""
        tp = TopicPartition(self._topic, partition, p.start)
        if partition not in self._next:
            self._consumer.incremental_assign([tp])
            self._next[partition] = p.start
        elif self._next[partition] != p.start:
            self._consumer.seek(tp)
            self._next[partition] = p.start

    def _watermarks(self, partition: int) -> tuple[int, int]:
        """(low, end): with read_committed the high mark the broker gives is the LSO."""
        tp = TopicPartition(self._topic, partition)
        deadline = time.monotonic() + self._stall_timeout_s
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(
                    tp, timeout=self._stall_timeout_s, cached=False
                )
                return int(low), int(high)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise RestoreError(
                        f"cannot read the end of {self._topic} partition {partition}: "
                        f"{exc.args[0]}; check that the broker is up and the topic exists"
                    ) from exc
                time.sleep(0.1)

    def _read(self, progress: dict[int, _Progress], budget: int | None) -> None:
        batch = self._batch_records
        last_move = time.monotonic()
        while not all(p.done for p in progress.values()):
            if budget is not None and budget <= 0:
                self._settle(progress)
                return
            wanted = batch if budget is None else min(batch, budget)
            messages = self._consumer.consume(wanted, self._poll_timeout_s)
            if budget is not None:
                budget -= len(messages)
            #: followed partitions this call was not asked about -> their first offset read
            not_asked: dict[int, int] = {}
            # The loop runs once per record: it stays lean (no per-record batch check, the
            # partition's progress looked up only when the partition changes; records come
            # in runs of one partition).
            current, p = -1, None
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RestoreError(
                        f"reading {self._topic}: {err}; the restore stopped, retry it"
                    )
                # a record always has both (only error events lack them)
                partition: int = msg.partition()  # type: ignore[assignment]
                if partition != current:
                    current, p = partition, progress.get(partition)
                    if p is not None and p.first_offset is None:
                        p.first_offset = msg.offset()
                if p is None:
                    not_asked.setdefault(partition, msg.offset())  # type: ignore[arg-type]
                    continue
                key = msg.key()
                if key is None:
                    raise RestoreError(
                        f"{self._topic} partition {partition} offset {msg.offset()} has no "
                        "key: not a changelog record; check what else writes to this topic"
                    )
                p.writes.append((key, msg.value()))
                p.last_offset = msg.offset()
            for partition, p in progress.items():
                if len(p.writes) >= batch and p.last_offset is not None:
                    self._flush(partition, p, p.last_offset)
            for partition, offset in not_asked.items():
                # leave it where its own store is: a later call reads these again
                self._consumer.seek(TopicPartition(self._topic, partition, offset))
            moved = self._check_positions(progress)
            now = time.monotonic()
            if messages or moved:
                last_move = now
            elif now - last_move > self._stall_timeout_s:
                stuck = sorted(n for n, p in progress.items() if not p.done)
                raise RestoreError(
                    f"restoring {self._topic} partitions {stuck} made no progress for "
                    f"{self._stall_timeout_s}s; check the broker, then retry"
                )

    def _settle(self, progress: dict[int, _Progress]) -> None:
        """The budget ran out: apply what each unfinished partition has read so far.

        The consumer's position is the next record it would hand out, and every record below
        it was handed out (or carried no data), so the store reflects the log up to
        ``position - 1`` and the next call continues from there without a seek.
        """
        for partition, p in progress.items():
            if p.done or not p.writes:
                continue
            reached = self._next[partition] - 1
            if p.last_offset is not None:
                reached = max(reached, p.last_offset)
            self._flush(partition, p, reached)

    def _check_positions(self, progress: dict[int, _Progress]) -> bool:
        """Mark partitions whose position reached their end; apply what they buffered."""
        moved = False
        open_ = [n for n, p in progress.items() if not p.done or p.writes]
        if not open_:
            return False
        positions = self._consumer.position([TopicPartition(self._topic, n) for n in open_])
        for tp in positions:
            partition, position = tp.partition, tp.offset
            p = progress[partition]
            if position < 0:  # nothing fetched yet: the position is still unknown
                continue
            if position != self._next[partition]:
                moved = True
                self._next[partition] = position
            if not p.done and position >= p.end:
                p.done = True
                # everything below the position is accounted for: markers and aborted
                # records carry no data, so the store reflects the log up to position - 1
                self._flush(partition, p, position - 1)
            elif p.done and p.writes:
                self._flush(partition, p, position - 1)
        return moved

    def _flush(self, partition: int, p: _Progress, offset: int) -> None:
        stored = p.store.changelog_offset()
        if not p.writes and stored is not None and stored >= offset:
            return
        p.store.apply(p.writes, changelog_offset=offset)
        p.records += len(p.writes)
        p.writes = []


def restore_partition(
    bootstrap_servers: str,
    topic: str,
    partition: int,
    store: PartitionStore,
    *,
    batch_records: int = DEFAULT_BATCH_RECORDS,
    stall_timeout_s: float = 30.0,
) -> RestoreReport:
    """Restore one partition store from its changelog with a consumer of its own.

    Raises:
        RestoreError: see :meth:`ChangelogRestorer.catch_up`.
        StorageFull: the store ran out of disk.
    """
    restorer = ChangelogRestorer(
        changelog_consumer(bootstrap_servers),
        topic,
        batch_records=batch_records,
        stall_timeout_s=stall_timeout_s,
    )
    try:
        return restorer.catch_up({partition: store})[partition]
    finally:
        restorer.close()


#: Records one restore slice reads at most: the poll loop restores between batches of the
#: partitions it already processes, so a slice is what those partitions wait for.
DEFAULT_SLICE_RECORDS = 20_000


class PartitionRestorer(Protocol):
    """Restores newly assigned partition stores in slices, from the poll loop's thread (the
    loop's view; :class:`AssignedRestore`)."""

    @property
    def pending(self) -> frozenset[int]:
        """The partitions begun and not yet restored."""
        ...

    def begin(self, store: PartitionStore) -> None:
        """Start restoring ``store`` (same partition number as the changelog's)."""
        ...

    def step(self) -> list[PartitionStore]:
        """Read one bounded slice for the pending partitions; returns the stores that
        reached the end of their changelog partition (no longer pending).

        Raises:
            RestoreError: the changelog could not be read (see
                :meth:`ChangelogRestorer.catch_up`).
            StorageFull: a store ran out of disk.
        """
        ...

    def cancel(self, partitions: list[int]) -> list[PartitionStore]:
        """Stop restoring ``partitions`` (revoked or lost); returns their stores."""
        ...


class HighWatermarks(Protocol):
    """The high watermark of a changelog partition: its end counting undecided transactions
    (what a ``read_uncommitted`` reader sees), beside the last stable offset the restore's
    ``read_committed`` consumer gets."""

    def high_watermark(self, topic: str, partition: int) -> int:
        """Raises ``KafkaException`` if the broker does not answer."""
        ...


class KafkaHighWatermarks:
    """:class:`HighWatermarks` from the broker, through a ``read_uncommitted`` consumer that
    is never assigned or subscribed (it only asks for ends; a consumer refreshes its
    metadata after a broker restart, which the admin client's offset query did not)."""

    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 10.0) -> None:
        self._consumer = changelog_consumer(
            bootstrap_servers, **{"isolation.level": "read_uncommitted"}
        )
        self._timeout_s = timeout_s

    def high_watermark(self, topic: str, partition: int) -> int:
        _low, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self._timeout_s, cached=False
        )
        return int(high)

    def close(self) -> None:
        self._consumer.close()


def settled_end(stable: int, high: int, *, waited_s: float, limit_s: float) -> int | None:
    """Where a restore may end, or None to measure again later.

    ``stable`` (the last stable offset) below ``high`` (the high watermark) means a
    transaction is undecided: maybe the previous owner's, committed but its changelog marker
    not written yet (its input offsets may already be visible), whose records the restore
    must include. Wait for it, up to ``limit_s``: an open transaction is aborted by the
    broker within its ``transaction.timeout.ms``, so one still undecided after that is a
    zombie's that can no longer commit, and ending at ``stable`` loses nothing.
    """
    if stable >= high or waited_s >= limit_s:
        return stable
    return None


#: How often a restore waiting for an undecided changelog transaction asks again.
SETTLE_RECHECK_S = 0.1
#: How often it says it is still waiting.
SETTLE_NOTE_S = 10.0


@dataclass
class _Restoring:
    store: PartitionStore
    started: float
    end: int | None = None
    records: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    #: the last stable offset while an undecided transaction holds it below the high mark
    undecided_at: int | None = None
    waiting_since: float = 0.0
    next_check: float = 0.0
    next_note: float = 0.0


@dataclass(frozen=True)
class RestoreProgress:
    """One restore under way, for ``/metrics``.

    Attributes:
        records: changelog records applied so far.
        remaining: changelog offsets still to read up to the end measured when the restore
            began (an upper bound of records: transaction markers take offsets too); None
            before the first slice measured the end.
    """

    records: int
    remaining: int | None


class AssignedRestore:
    """A :class:`PartitionRestorer` over one :class:`ChangelogRestorer`: catch newly
    assigned partitions' stores up (only the tail, for a kept store), a slice at a time,
    each up to where its changelog partition ended when its restore began, then let them go.

    ``reports`` holds one report per finished restore (the last 100), over all its slices;
    ``records_restored`` and ``restores`` count every record applied and restore finished.
    The end is taken once no changelog transaction is undecided (see :func:`settled_end`);
    until then the partition waits (``/health`` lists it as restoring) and the others go on.
    """

    def __init__(
        self,
        restorer: ChangelogRestorer,
        *,
        high_marks: HighWatermarks,
        undecided_wait_s: float = 70.0,
        slice_records: int = DEFAULT_SLICE_RECORDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            restorer: reads the changelog (read_committed).
            high_marks: the changelog partitions' high watermarks.
            undecided_wait_s: longest wait for an undecided changelog transaction; at
                least the producers' ``transaction.timeout.ms`` (plus the broker's abort
                check interval, 10 s by default).
            slice_records: records one :meth:`step` reads at most.
            clock: monotonic seconds (tests).
        """
        self.restorer = restorer
        self.slice_records = slice_records
        self.reports: list[RestoreReport] = []
        self.records_restored = 0
        self.restores = 0
        self._high_marks = high_marks
        self._undecided_wait_s = undecided_wait_s
        self._clock = clock
        self._pending: dict[int, _Restoring] = {}

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    def begin(self, store: PartitionStore) -> None:
        self._pending[store.partition] = _Restoring(store, self._clock())

    def progress(self) -> dict[int, RestoreProgress]:
        """The restores under way; safe from another thread (reads a copy)."""
        out: dict[int, RestoreProgress] = {}
        for p, r in list(self._pending.items()):
            remaining = None
            if r.end is not None:
                done = -1 if r.last_offset is None else r.last_offset
                remaining = max(0, r.end - 1 - done)
            out[p] = RestoreProgress(r.records, remaining)
        return out

    def step(self) -> list[PartitionStore]:
        if not self._pending:
            return []
        for p, r in self._pending.items():
            if r.end is None:
                r.end = self._settle(p, r)
        # The end a restore reads to is measured once, after the committed offsets were
        # stable and no changelog transaction was undecided: nobody else writes the
        # partition's changelog now.
        ready = {p: r for p, r in self._pending.items() if r.end is not None}
        if not ready:
            return []
        reports = self.restorer.catch_up(
            {p: r.store for p, r in ready.items()},
            max_records=self.slice_records,
            ends={p: r.end for p, r in ready.items() if r.end is not None},
        )
        done: list[PartitionStore] = []
        for p, part in reports.items():
            r = self._pending[p]
            r.records += part.records
            r.last_offset = part.last_offset
            self.records_restored += part.records
            if r.first_offset is None:
                r.first_offset = part.first_offset
            if part.caught_up:
                self.restorer.release([p])
                del self._pending[p]
                self._finished(p, r, part)
                done.append(r.store)
        return done

    def cancel(self, partitions: list[int]) -> list[PartitionStore]:
        gone = [p for p in partitions if p in self._pending]
        self.restorer.release(gone)
        return [self._pending.pop(p).store for p in gone]

    def _settle(self, p: int, r: _Restoring) -> int | None:
        """The partition's end if no transaction is undecided (or the wait is over)."""
        now = self._clock()
        if now < r.next_check:
            return None
        r.next_check = now + SETTLE_RECHECK_S
        topic = self.restorer.topic
        # stable first: a high mark read after it that equals it proves nothing was
        # undecided below it when it was read
        stable = self.restorer.stable_end(p)
        try:
            high = self._high_marks.high_watermark(topic, p)
        except KafkaException as exc:
            if now >= r.next_note:
                r.next_note = now + SETTLE_NOTE_S
                log.warning("partition %s: end of %s unknown (%s); asking again", p, topic, exc)
            return None
        waited = 0.0 if r.undecided_at is None else now - r.waiting_since
        end = settled_end(stable, high, waited_s=waited, limit_s=self._undecided_wait_s)
        if end is None:
            if r.undecided_at is None:
                r.waiting_since = now
            if r.undecided_at != stable or now >= r.next_note:
                log.info(
                    "partition %s: %s has an undecided transaction at offset %s (high watermark"
                    " %s); waiting for it to commit or abort (at most %.0fs) before restoring",
                    p,
                    topic,
                    stable,
                    high,
                    self._undecided_wait_s,
                )
                r.next_note = now + SETTLE_NOTE_S
            r.undecided_at = stable
        elif stable < high:
            log.warning(
                "partition %s: %s still has an undecided transaction at offset %s (high "
                "watermark %s) after %.0fs: a zombie's, aborted by the broker at its "
                "transaction timeout; restoring up to %s without it",
                p,
                topic,
                stable,
                high,
                waited,
                stable,
            )
        return end

    def _finished(self, p: int, r: _Restoring, last: RestoreReport) -> None:
        report = RestoreReport(
            partition=p,
            records=r.records,
            first_offset=r.first_offset,
            last_offset=last.last_offset,
            end_offset=last.end_offset,
            seconds=self._clock() - r.started,
        )
        self.reports.append(report)
        del self.reports[:-100]
        self.restores += 1
        log.info(
            "partition %s restored: %s records (%s..%s) in %.2fs",
            p,
            report.records,
            report.first_offset,
            report.last_offset,
            report.seconds,
        )
