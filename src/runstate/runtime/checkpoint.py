"""The commit protocol, in one place: one Kafka transaction per checkpoint interval.

Everything a worker makes between two checkpoints - state changes, run summaries, dead
letters, events it writes itself, and the changelog records of every touched partition -
goes into one Kafka transaction together with the consumed offsets, so it becomes visible
to ``read_committed`` readers all at once or not at all. Per interval (default 100 ms):

1. the transaction is begun lazily, by the first output (or at the checkpoint if the
   interval only consumed records that made nothing, e.g. duplicates);
2. each touched partition's :class:`~runstate.runtime.store.PartitionTransaction` writes
   are produced to the same partition of the changelog topic;
3. the producer is flushed, so every delivery report (and the changelog offsets they carry)
   is in;
4. the positions of the processed records go in with ``send_offsets_to_transaction`` and the
   consumer's group metadata, so a worker whose group generation moved on is refused
   (KIP-447: a zombie cannot commit);
5. ``commit_transaction``;
6. only then each partition's writes are applied to its store, atomically with the highest
   changelog offset delivered for it. The store never holds what the broker did not commit.

An abortable error (``txn_requires_abort``, a failed delivery) aborts the transaction, drops
the overlays and seeks the consumer back to the last committed offsets: the records are
processed again, from a store that was never touched. A fatal error (fenced by a newer
instance with the same ``transactional.id``, or any ``fatal()`` error) raises
:class:`Fenced`: the worker must stop; a supervisor restarts it.

A broker outage is waited out, not fatal: the flush waits for the deliveries in slices
(:attr:`Checkpoint.waiting_on` says why, for ``/health``), records that time out make the
transaction abortable, and an abort that cannot reach the coordinator is retried with a
back-off for up to ``outage_s``. If the broker aborted the transaction meanwhile (it
outlived ``transaction.timeout.ms``), the producer is fenced by its own bumped epoch:
:class:`BrokerLost` (a :class:`Fenced`) tells the loop to start a fresh producer with the
same ``transactional.id`` (:meth:`Checkpoint.renew_producer`) and take its partitions on
again from their committed offsets and changelogs, in the same process.

Without exactly-once (``exactly_once=False``) the same class runs at-least-once: a plain
idempotent producer, a flush, the store apply, and only then ``Consumer.commit``; a crash
in between redelivers records the reducer recognises as duplicates by their offsets.

Only :meth:`Checkpoint.commit` waits on the broker, once per interval; producing only queues.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from runstate.errors import Error
from runstate.runtime.clients import GroupConsumer, Headers, TransactionalProducer
from runstate.runtime.fault_hooks import CrashPoints
from runstate.runtime.metrics import LatencyHistogram
from runstate.runtime.store import PartitionStore, PartitionTransaction
from runstate.streams.clients import is_transport_error

__all__ = ["BrokerLost", "Checkpoint", "CheckpointFailed", "Fenced"]

log = logging.getLogger(__name__)

#: How much longer than its own timeout a transactional call may take before the producer
#: is taken for wedged (seen after a broker restart: ``send_offsets_to_transaction`` with a
#: 60 s timeout had not returned after four minutes).
WEDGED_MARGIN_S = 10.0
#: A broker call unanswered this long makes :attr:`Checkpoint.waiting_on` say so: the
#: health process then tells a loop waiting for the broker from a stuck one.
SLOW_CALL_S = 1.0

#: Errors that mean another instance owns this worker's transactional id or partitions.
_FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTION_COORDINATOR_FENCED,
    }
)


class Fenced(Error):
    """Another instance took over (same transactional id, or the group moved on) or the
    producer hit a fatal error. Nothing more can be committed by this process: stop it and
    let the supervisor start a fresh one, which restores from the changelog."""


class BrokerLost(Fenced):
    """The producer was fenced or failed while the broker was unreachable (the broker aborted
    the transaction that outlived its timeout, bumping the producer's epoch). Nothing of the
    interval was committed by this producer; the loop renews the producer and takes its
    partitions on again, in the same process."""


class CheckpointFailed(Error):
    """At-least-once mode: outputs or changelog records were not delivered; the offsets were
    not committed. Stop the worker; its records are redelivered on restart."""


@dataclass
class _Partition:
    store: PartitionStore
    committed: int | None  # next offset to consume after the last commit; None: from the start
    overlay: PartitionTransaction | None = None
    next_offset: int | None = None  # after the last record processed since the commit


class Checkpoint:
    """Owns the worker's producer and commits everything made since the last checkpoint.

    The task writes through :meth:`transaction` and :meth:`produce` and reports each record
    it handled with :meth:`processed`; the loop calls :meth:`commit` when :meth:`due`, and
    before it gives up partitions.
    """

    def __init__(
        self,
        producer: TransactionalProducer,
        consumer: GroupConsumer,
        *,
        source_topic: str,
        changelog_topic: str,
        exactly_once: bool = True,
        interval_s: float = 0.1,
        max_records: int | None = None,
        timeout_s: float = 60.0,
        outage_s: float = 600.0,
        producer_factory: Callable[[], TransactionalProducer] | None = None,
        crash_points: CrashPoints | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._producer = producer
        self._producer_factory = producer_factory
        self._outage_s = outage_s
        self._sleep = sleep
        #: Why the last checkpoint is waiting on the broker (None: it is not); read by
        #: ``/health`` from another thread.
        self.waiting_on: str | None = None
        #: when the broker was first found unreachable since the last commit (None: it was not)
        self._unreachable_since: float | None = None
        #: when it was last found unreachable (the clock's seconds; None: never)
        self.unreachable_at: float | None = None
        #: runs the transactional calls, so one that never returns can be left behind
        self._caller = _Caller()
        self._wedged = False
        self._consumer = consumer
        self._source_topic = source_topic
        self._changelog_topic = changelog_topic
        self.exactly_once = exactly_once
        self._interval_s = interval_s
        self._max_records = max_records
        self._timeout_s = timeout_s
        self._crash = crash_points or CrashPoints()
        self._clock = clock
        self._partitions: dict[int, _Partition] = {}
        self._in_transaction = False
        self._failure: KafkaError | None = None
        self._changelog_offsets: dict[int, int] = {}
        self._last = clock()
        #: Records handled since the last checkpoint (what :meth:`due` bounds).
        self._records = 0
        self._abort_listeners: list[Callable[[], None]] = []
        #: Counts aborts, so the loop can tell one happened inside a ``consume()`` call.
        self.aborts = 0
        self.commits = 0
        #: The most records one checkpoint committed (``max_records`` bounds it).
        self.largest_commit = 0
        #: Wall-clock time of the last successful commit (how fresh the stores are).
        self.committed_at: float | None = None
        #: Durations of the checkpoints that committed something (``/metrics``).
        self.commit_seconds = LatencyHistogram()

    # -- set-up ----------------------------------------------------------------------------
    def start(self) -> None:
        """Register the transactional id with the broker, fencing any older instance of this
        worker (its open transaction is aborted).

        Raises:
            Fenced: the producer cannot be initialised (fatal error).
        """
        if self.exactly_once:
            try:
                self._producer.init_transactions(self._timeout_s)
            except KafkaException as exc:
                raise Fenced(f"could not initialise transactions: {exc}") from exc

    def use_consumer(self, consumer: GroupConsumer) -> None:
        """Commit offsets with ``consumer``'s group metadata from now on (a renewed group
        member; no partition is held across the change)."""
        self._consumer = consumer

    def on_abort(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every abort (caches built on the dropped writes)."""
        self._abort_listeners.append(listener)

    def add_partition(self, partition: int, store: PartitionStore, committed: int | None) -> None:
        """Take ``partition`` on, its store restored, consumption starting at ``committed``."""
        self._partitions[partition] = _Partition(store, committed)

    def remove_partition(self, partition: int) -> PartitionStore | None:
        """Forget ``partition`` (revoked or lost); anything uncommitted of it is dropped."""
        part = self._partitions.pop(partition, None)
        return None if part is None else part.store

    def committed_store(self, partition: int) -> PartitionStore | None:
        """The store of an owned partition: what the last committed transaction left (the
        interval's writes are in the overlay until the commit applies them)."""
        part = self._partitions.get(partition)
        return None if part is None else part.store

    def committed_offset(self, partition: int) -> int | None:
        """The next offset to consume after the last commit, or None if never committed."""
        part = self._partitions.get(partition)
        return None if part is None else part.committed

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    # -- what the task calls ---------------------------------------------------------------
    def transaction(self, partition: int) -> PartitionTransaction:
        """The partition's overlay for this interval (made on first use)."""
        part = self._partitions[partition]
        if part.overlay is None:
            part.overlay = PartitionTransaction(part.store)
        return part.overlay

    def processed(self, partition: int, offset: int) -> None:
        """The record at ``offset`` is handled; its effects are in the overlay or produced."""
        self._partitions[partition].next_offset = offset + 1
        self._records += 1

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue an output inside this interval's transaction (begun here if need be).

        Raises:
            Fenced: the producer is fenced or failed fatally.
        """
        self._produce(topic, key, value, partition=partition, headers=headers)

    # -- the checkpoint --------------------------------------------------------------------
    def due(self) -> bool:
        """The interval is up, or ``max_records`` records were handled since the last
        checkpoint: a backlog never makes one checkpoint's changelog, flush and store write
        (which holds the GIL from start to end) larger than the bound."""
        if self._max_records is not None and self._records >= self._max_records:
            return True
        return self._clock() - self._last >= self._interval_s

    def since_last(self) -> float:
        """Seconds since the last checkpoint."""
        return self._clock() - self._last

    @property
    def uncommitted(self) -> bool:
        """Whether records were processed since the last checkpoint."""
        return any(part.next_offset is not None for part in self._partitions.values())

    def time_left(self) -> float:
        """Seconds until the next checkpoint is due (0 if it is)."""
        return max(0.0, self._interval_s - (self._clock() - self._last))

    def records_left(self) -> int | None:
        """Records the task may still handle before the checkpoint is due by size (at least
        1; None: no bound). The loop takes no more than this, so a checkpoint holds at most
        ``max_records`` records."""
        if self._max_records is None:
            return None
        return max(1, self._max_records - self._records)

    def commit(self) -> bool:
        """Commit everything since the last checkpoint; see the module docstring.

        Returns:
            True if committed (or nothing to commit), False if the transaction was aborted
            and the consumer rewound (the records will be processed again).

        Raises:
            Fenced: a newer instance or generation owns the work; stop the worker.
            CheckpointFailed: at-least-once mode could not deliver; stop the worker.
            Exception: from :meth:`PartitionStore.apply` (e.g. the disk is full): the broker
                committed but the store could not be updated; stop the worker. On restart
                the store is restored from the changelog, which holds what was committed.
        """
        began = self._last = self._clock()
        records, self._records = self._records, 0
        positions = [
            TopicPartition(self._source_topic, p, part.next_offset)
            for p, part in sorted(self._partitions.items())
            if part.next_offset is not None
        ]
        touched = {p: part for p, part in self._partitions.items() if part.overlay}
        if not positions and not touched and not self._in_transaction:
            return True
        try:
            for p, part in sorted(touched.items()):
                assert part.overlay is not None
                for key, value in part.overlay.writes():
                    self._produce(self._changelog_topic, key, value, partition=p)
            self._crash.reached("after_produce")
            self._flush()
            if self.exactly_once:
                self._begin()  # offsets alone (duplicates only) still need a transaction
                if positions:
                    # asked on this thread: from the caller thread, during a revocation's
                    # checkpoint (inside consume()), it did not return (test_rebalance)
                    group = self._consumer.consumer_group_metadata()
                    self._call(
                        lambda: self._producer.send_offsets_to_transaction(
                            positions, group, self._timeout_s
                        )
                    )
                self._crash.reached("before_commit")
                self._call(lambda: self._producer.commit_transaction(self._timeout_s))
                self._in_transaction = False
                self._crash.reached("after_commit")
        except _Abortable as exc:
            self._abort(str(exc))
            return False
        self._apply(touched)
        if not self.exactly_once and positions:
            self._crash.reached("before_commit")
            try:
                self._consumer.commit(offsets=positions, asynchronous=False)
            except KafkaException as exc:
                raise CheckpointFailed(f"committing offsets failed: {exc}") from exc
            self._crash.reached("after_commit")
        for tp in positions:
            part = self._partitions[tp.partition]
            part.committed, part.next_offset = tp.offset, None
        self._crash.reached("after_apply")
        self.waiting_on, self._unreachable_since = None, None
        self.commits += 1
        self.largest_commit = max(self.largest_commit, records)
        self.committed_at = time.time()
        self.commit_seconds.observe(self._clock() - began)
        return True

    def renew_producer(self) -> None:
        """Replace a fenced producer by a fresh one with the same ``transactional.id`` (after
        :class:`BrokerLost`), waiting out the broker; everything uncommitted is dropped.

        Raises:
            Fenced: no factory was given, or the new producer cannot initialise.
        """
        if self._producer_factory is None:
            raise Fenced("the producer was fenced and cannot be renewed; restart the worker")
        old, self._producer = self._producer, self._producer_factory()
        if self._wedged:  # a call still hangs in it: closing would hang too; leave it
            self._wedged = False
        else:
            try:
                old.close()
            except Exception as exc:  # a fenced producer may fail to close; dropped anyway
                log.info("closing the fenced producer: %s", exc)
        self._in_transaction, self._failure = False, None
        self._changelog_offsets.clear()
        for part in self._partitions.values():
            part.overlay, part.next_offset = None, None
        self.aborts += 1
        for listener in self._abort_listeners:
            listener()
        self._retry(
            "could not initialise the new producer",
            lambda: self._producer.init_transactions(self._timeout_s),
        )
        self.waiting_on, self._unreachable_since = None, None

    def close(self) -> None:
        """Release the producer (after the last :meth:`commit`; anything open is aborted by
        the broker when the transaction times out, or fenced by the next instance)."""
        self._caller.stop()
        self._producer.flush(self._timeout_s)
        self._producer.close()

    def abort(self, why: str) -> None:
        """Drop everything since the last checkpoint and rewind (partitions were lost)."""
        self._abort(why)

    def rewind(self) -> None:
        """Seek every partition back to its last committed offset (records fetched before an
        abort must not be processed)."""
        for p, part in self._partitions.items():
            offset = OFFSET_BEGINNING if part.committed is None else part.committed
            try:
                self._consumer.seek(TopicPartition(self._source_topic, p, offset))
            except KafkaException as exc:  # not assigned any more: nothing to rewind
                log.info("not rewinding partition %s: %s", p, exc)

    # -- internals -------------------------------------------------------------------------
    def _begin(self) -> None:
        if self.exactly_once and not self._in_transaction:
            self._call(lambda: self._producer.begin_transaction())
            self._in_transaction = True

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None,
        headers: Headers | None = None,
    ) -> None:
        try:
            self._begin()
        except _Abortable as exc:  # remembered; the checkpoint aborts
            self._failure = self._failure or exc.error
            return
        while True:
            try:
                self._producer.produce(
                    topic,
                    key=key,
                    value=value,
                    partition=-1 if partition is None else partition,
                    headers=headers,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # the local queue is full: serve deliveries first
            except KafkaException as exc:
                error = exc.args[0]
                if _is_fatal(error):
                    self._fenced(f"the producer is fenced or failed: {error.str()}", exc)
                self._failure = self._failure or error
                return

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failure = self._failure or err
            return
        if msg.topic() == self._changelog_topic:
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None:
                known = self._changelog_offsets.get(partition, -1)
                self._changelog_offsets[partition] = max(known, offset)

    def _flush(self) -> None:
        try:
            left = self._flush_in_slices()
        except (KafkaException, SystemError) as exc:
            # A fatal error (fenced) can come out of flush() itself; while delivery
            # callbacks still run, confluent-kafka reports it as a SystemError whose cause
            # is the KafkaException.
            error = _kafka_error(exc)
            if error is None:
                raise
            self._failure = None
            if _is_fatal(error):
                self._fenced(f"the producer is fenced or failed: {error.str()}", exc)
            if not self.exactly_once:
                raise CheckpointFailed(f"outputs not delivered: {error.str()}") from exc
            raise _Abortable(error.str(), error) from exc
        failure, self._failure = self._failure, None
        if left or failure is not None:
            what = failure.str() if failure is not None else f"{left} records undelivered"
            if not self.exactly_once:
                raise CheckpointFailed(f"outputs not delivered: {what}")
            if failure is not None and _is_fatal(failure):
                self._fenced(f"the producer is fenced or failed: {what}", KafkaException(failure))
            if failure is not None and is_transport_error(failure):
                self._unreachable()
            raise _Abortable(what, failure)

    def _flush_in_slices(self) -> int:
        """``flush``, a second at a time: while deliveries wait on an unreachable broker,
        :attr:`waiting_on` says so. A record the broker never took fails by itself at the
        producer's ``message.timeout.ms`` (at most ``transaction.timeout.ms``)."""
        deadline = self._clock() + self._timeout_s
        while True:
            left = self._producer.flush(min(1.0, max(0.0, deadline - self._clock())))
            if not left or self._clock() >= deadline:
                return left
            self._unreachable()
            self.waiting_on = f"{left} records not delivered yet: waiting for the broker"

    def _unreachable(self) -> float:
        """Note that the broker does not answer; returns for how long it has not."""
        now = self._clock()
        self.unreachable_at = now
        if self._unreachable_since is None:
            self._unreachable_since = now
        return now - self._unreachable_since

    def _retry(self, doing: str, step: Callable[[], None]) -> None:
        """Run ``step`` until it succeeds, retrying errors that are not fatal with a back-off
        (the broker is away) for up to ``outage_s``.

        Raises:
            BrokerLost: a fatal error after the broker was unreachable.
            Fenced: a fatal error otherwise, or still failing after ``outage_s``.
        """
        backoff = 0.2
        while True:
            try:
                self._bounded(doing, step)
                self.waiting_on = None
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if _is_fatal(error):
                    self._fenced(f"{doing}: {error.str()}", exc)
                away = self._unreachable()
                if away > self._outage_s:
                    raise Fenced(
                        f"{doing} failed for {away:.0f}s ({error.str()}); restart the worker "
                        "once the broker is back"
                    ) from exc
                self.waiting_on = f"{doing}: {error.str()}"
                log.warning("%s: %s; retrying in %.1fs", doing, error.str(), backoff)
                self._sleep(backoff)
                backoff = min(5.0, backoff * 2)

    def _bounded(self, doing: str, step: Callable[[], None]) -> None:
        """Run ``step`` on the caller thread and wait at most its timeout plus a margin.

        Raises:
            BrokerLost: it did not return (the producer is wedged; it is left behind and a
                new one takes over), or Fenced without a producer factory.
            KafkaException: what ``step`` raised.
        """

        def slow() -> None:
            self.waiting_on = f"{doing}: no answer from the broker for {SLOW_CALL_S:.0f}s"

        if not self._caller.call(
            step, timeout_s=self._timeout_s + WEDGED_MARGIN_S, slow_s=SLOW_CALL_S, on_slow=slow
        ):
            self._caller.stop()  # once (if ever) the wedged call returns
            self._caller = _Caller()
            self._wedged = True
            self._unreachable()
            self._fenced(
                f"{doing} did not return within {self._timeout_s + WEDGED_MARGIN_S:.0f}s",
                TimeoutError(doing),
            )

    def _fenced(self, why: str, exc: BaseException) -> NoReturn:
        """Raise :class:`BrokerLost` if the broker was unreachable since the last commit (its
        timeout abort fenced us), else :class:`Fenced`."""
        if self._unreachable_since is not None and self._producer_factory is not None:
            raise BrokerLost(
                f"the producer was fenced after the broker was unreachable ({why}); renewing it"
            ) from exc
        raise Fenced(
            f"this worker was fenced or its producer failed ({why}); another instance owns "
            "its work now: restart it"
        ) from exc

    def _call(self, step: Callable[[], None]) -> None:
        """Run one transactional call, retrying what librdkafka calls retriable.

        Raises:
            Fenced: a fatal or fencing error.
            _Abortable: the transaction must be aborted.
        """
        deadline = self._clock() + self._timeout_s
        while True:
            try:
                self._bounded("a transactional call", step)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if _is_fatal(error):
                    self._fenced(error.str(), exc)
                if error.txn_requires_abort():
                    raise _Abortable(error.str(), error) from exc
                if error.retriable() and self._clock() < deadline:
                    self._unreachable()
                    self.waiting_on = f"transaction: {error.str()}"
                    self._sleep(0.1)
                    continue
                raise _Abortable(error.str(), error) from exc

    def _abort(self, why: str) -> None:
        log.warning("aborting the checkpoint: %s; records are processed again", why)
        self._failure = None
        if self.exactly_once and self._in_transaction:
            self._retry(
                "could not abort the transaction",
                lambda: self._producer.abort_transaction(self._timeout_s),
            )
            self._in_transaction = False
        self._changelog_offsets.clear()
        self._records = 0
        for part in self._partitions.values():
            part.overlay, part.next_offset = None, None
        self.rewind()
        self.aborts += 1
        for listener in self._abort_listeners:
            listener()

    def _apply(self, touched: dict[int, _Partition]) -> None:
        """Write each committed overlay to its store with the changelog offset it reached."""
        offsets, self._changelog_offsets = self._changelog_offsets, {}
        for p, part in touched.items():
            assert part.overlay is not None
            part.store.apply(part.overlay.writes(), changelog_offset=offsets[p])
            part.overlay = None


class _Caller:
    """Runs calls one at a time on a daemon thread, so a call that never returns can be left
    behind without holding the process at exit (``concurrent.futures`` joins its threads)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Callable[[], None], threading.Event, list[BaseException]] | None
        ] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="transaction", daemon=True).start()

    def call(
        self,
        step: Callable[[], None],
        *,
        timeout_s: float,
        slow_s: float | None = None,
        on_slow: Callable[[], None] | None = None,
    ) -> bool:
        """Run ``step``; False if it did not return within ``timeout_s``. ``on_slow`` is
        called (on this thread) once it has not returned within ``slow_s``.

        Raises:
            BaseException: what ``step`` raised.
        """
        done, raised = threading.Event(), list[BaseException]()
        self._calls.put((step, done, raised))
        waited = 0.0
        if slow_s is not None and on_slow is not None and slow_s < timeout_s:
            if not done.wait(slow_s):
                on_slow()
            waited = slow_s
        if not done.wait(timeout_s - waited):
            return False
        if raised:
            raise raised[0]
        return True

    def stop(self) -> None:
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            step, done, raised = call
            try:
                step()
            except BaseException as exc:  # handed to the caller
                raised.append(exc)
            done.set()


class _Abortable(Exception):
    def __init__(self, message: str, error: KafkaError | None) -> None:
        super().__init__(message)
        self.error = error


def _kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError of ``exc`` or of the exception that caused it, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KafkaException) and isinstance(seen.args[0], KafkaError):
            return seen.args[0]
        seen = seen.__cause__ or seen.__context__
    return None


def _is_fatal(error: KafkaError) -> bool:
    return bool(error.fatal()) or error.code() in _FENCED_CODES
