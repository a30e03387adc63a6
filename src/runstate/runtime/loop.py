"""The poll loop: one consumer group member per worker, one checkpoint per interval.

Per iteration: ``consume`` up to a batch of records (waiting at most until the next
checkpoint is due), hand each partition's records, in order, to the task, and commit when
the interval is up. The loop itself never waits on the broker per batch; only the
checkpoint does, once per interval.

Rebalances (cooperative-sticky, incremental):

* assigned: the committed offset is fetched first (``read_committed`` waits for a pending
  transactional commit to settle, so the offset and the changelog agree), then the
  partition is assigned *paused* and its store restored from the same changelog partition,
  up to where it ended then, in bounded slices between the loop's batches: the partitions
  the worker already owns go on being processed meanwhile. Once restored, the partition is
  sought to the committed offset (records fetched before the pause are dropped), handed to
  the checkpoint, and resumed. Nothing of a partition is processed before its store is
  restored;
* revoked: the checkpoint commits what is done *before* the partition is given up, then
  the partition's store is closed and its cached states dropped (a partition still
  restoring has nothing to commit: its restore stops);
* lost (the group moved on without us, e.g. after a stall): nothing may be committed; the
  transaction is aborted and the partition dropped.

Standby replicas (:mod:`runstate.runtime.standby`) are tailed on this thread too, a bounded
number of records between batches; an assigned partition's standby store becomes its store,
so its restore reads only the tail.

A broker outage is waited out in this process: when the checkpoint raises
:class:`~runstate.runtime.checkpoint.BrokerLost` the producer is renewed and the owned
partitions taken on again as if just assigned; a consumer failing fatally within two minutes
of an unreachable broker is replaced and joins again.

Clean shutdown (:meth:`Worker.stop`, e.g. on SIGTERM): a final checkpoint, then close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from runstate.errors import RestoreError, StoreDamaged
from runstate.runs.dead_letters import SourceRecord
from runstate.runs.keyspace import KeyValueReader
from runstate.runtime.checkpoint import BrokerLost, Checkpoint, Fenced
from runstate.runtime.collector import LoopCollector
from runstate.runtime.config import RuntimeConfig
from runstate.runtime.eviction import FinishedRunEviction
from runstate.runtime.expiries import ApprovalExpiries
from runstate.runtime.health_board import REASON_CHARS, health_body
from runstate.runtime.metrics import WorkerMetrics
from runstate.runtime.recovery import PartitionRestorer
from runstate.runtime.run_task import RunTask
from runstate.runtime.standby import Standbys
from runstate.runtime.store import PartitionStore, Store

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: How often the loop notes its consumer lag for ``/metrics`` (seconds).
LAG_INTERVAL_S = 0.5
#: A fatal consumer error this soon after the broker was unreachable is the outage's
#: doing (a static member fenced by its own rejoin), and the consumer is renewed in-process.
BROKER_LATELY_S = 120.0


class Worker:
    """Runs the run-state task over the partitions the group gives this worker."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        consumer: Consumer,
        checkpoint: Checkpoint,
        task: RunTask,
        store: Store,
        restore: PartitionRestorer,
        expiries: ApprovalExpiries | None = None,
        eviction: FinishedRunEviction | None = None,
        standbys: Standbys | None = None,
        collector: LoopCollector | None = None,
        consumer_factory: Callable[[], Consumer] | None = None,
    ) -> None:
        self._config = config
        self._consumer_factory = consumer_factory
        #: when the broker was last found unreachable (monotonic; None: never)
        self._unreachable_at: float | None = None
        #: why /health is degraded after partitions were lost, until the next assignment
        self._lost_reason: str | None = None
        self._topic = config.names.events
        self._consumer = consumer
        #: The consumer's position per partition right after a checkpoint committed: past
        #: the last record processed and any transaction markers after it.
        self._past_markers: dict[int, int] = {}
        self._commit_listeners: list[Callable[[], None]] = []
        #: told the time of each poll (the health process's heartbeat); cheap, every batch
        self._heartbeat: Callable[[float], None] | None = None
        self._polled = False
        self._waiting: Callable[[], bool] | None = None
        self._checkpoint = checkpoint
        self._task = task
        self._store = store
        self._restore = restore
        self._expiries = expiries
        self._eviction = eviction
        self._standbys = standbys
        self._collector = collector
        self._stopping = threading.Event()
        self.records = 0
        checkpoint.on_abort(self._task.forget)
        # Held while the query thread reads a partition's store and while the loop gives a
        # partition up (closing its store): a query never reads a closed store.
        self._partition_lock = threading.RLock()
        self._assigning = False
        #: restoring partition -> the offset to consume from once restored (None: start)
        self._restoring: dict[int, int | None] = {}
        #: what health reads from another thread: replaced whole, never changed in place
        self._restoring_view: frozenset[int] = frozenset()
        self._started = time.monotonic()
        self._last_poll = time.monotonic()
        self._broker_error: str | None = None
        #: partition -> records not consumed yet; replaced whole by the loop (metrics read it)
        self._lag_view: dict[int, int] = {}
        self._lag_due = 0.0
        self._metrics = WorkerMetrics(
            self, checkpoint=checkpoint, task=task.counts, restore=restore, standbys=standbys
        )

    # -- what the query API reads (another thread) ------------------------------------------
    @property
    def worker_id(self) -> str:
        return self._config.worker_id

    @property
    def partitions(self) -> int:
        return self._config.partitions

    @contextmanager
    def reading(self, partition: int) -> Iterator[KeyValueReader | None]:
        """The committed store of an owned, restored partition (None if not owned)."""
        with self._partition_lock:
            yield self._checkpoint.committed_store(partition)

    @property
    def standbys(self) -> Standbys | None:
        """The standby replicas (loop thread only; tests and metrics read their counters)."""
        return self._standbys

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the loop's thread) after each checkpoint, once
        :meth:`processed_through` reflects it: the query API wakes its read-your-writes
        waits with it instead of looking again at intervals."""
        self._commit_listeners.append(listener)

    def on_poll(self, heartbeat: Callable[[float], None]) -> None:
        """Call ``heartbeat(time.monotonic())`` (on the loop's thread) each time the loop
        polls: the status board's heartbeat, which the health process reads."""
        self._heartbeat = heartbeat

    def commit_for_reads(self, waiting: Callable[[], bool]) -> None:
        """Checkpoint early while ``waiting()`` (a query waits for a write to be committed,
        read-your-writes) and records were processed since the last checkpoint: at least
        ``read_commit_gap_s`` after it, not at the full interval. An agent's read after its
        own write (an attach, ``call_once``) then waits for about one transaction, not half
        an interval on average; the gap bounds the commit rate while reads keep waiting."""
        self._waiting = waiting

    def _read_waits(self) -> bool:
        waiting = self._waiting
        return (
            waiting is not None
            and waiting()
            and self._checkpoint.since_last() >= self._config.read_commit_gap_s
            and self._checkpoint.uncommitted
        )

    def processed_through(self, partition: int) -> int | None:
        """The last offset of ``partition`` whose effects are committed, counting transaction
        markers: the worker's own ApprovalExpired events commit with a marker after them in
        the events topic, an offset no record's ``offset + 1`` reaches, so without it a
        reader waiting for the end of the partition (``HttpRunStateReader.latest_position``)
        would wait for the next event."""
        committed = self._checkpoint.committed_offset(partition)
        if committed is None:
            return None
        return max(committed, self._past_markers.get(partition, 0)) - 1

    def owned_partitions(self) -> list[int]:
        return sorted(self._checkpoint.partitions)

    def freshness(self, partition: int) -> dict[str, Any]:
        """How fresh an answer from ``partition`` is: what was committed, and when."""
        at = self._checkpoint.committed_at
        return {
            "partition": partition,
            "committed_offset": self.processed_through(partition),
            "committed_at": None if at is None else datetime.fromtimestamp(at, UTC).isoformat(),
            "commit_age_s": None if at is None else round(time.time() - at, 3),
        }

    def status(self) -> dict[str, Any]:
        """What ``/health`` reports but the times: ready once subscribed and not restoring;
        the reason the broker gives (or why partitions were lost), cut to a length; whether
        the loop has yet to poll for the first time or an assignment is being taken on
        (waits with a reason, like the broker's). Reads only values the loop replaces whole
        (no lock, no store): it answers while the loop is busy, from any thread."""
        reason = (
            self._broker_error
            or self._checkpoint.waiting_on
            or self._lost_reason
            or self._store.waiting_on
        )
        restoring = self._restoring_view
        at = self._checkpoint.committed_at
        return {
            "worker_id": self.worker_id,
            "ready": not self._assigning and not restoring and not self._stopping.is_set(),
            "broker_error": None if reason is None else reason[:REASON_CHARS],
            "starting": not self._polled,  # e.g. init_transactions fencing an old instance
            "assigning": self._assigning,
            "active_partitions": self.owned_partitions(),
            "restoring_partitions": sorted(restoring),
            "standby_partitions": (
                [] if self._standbys is None else sorted(self._standbys.partitions)
            ),
            "last_checkpoint_at": (
                None if at is None else datetime.fromtimestamp(at, UTC).isoformat()
            ),
        }

    def health(self) -> dict[str, Any]:
        """``/health`` as the query API answers it (:func:`health_body`); degraded while the
        broker errs or the loop has not polled for ``health_stall_s``."""
        now = time.monotonic()
        return health_body(
            self.status(),
            loop_age_s=now - self._last_poll,
            status_age_s=0.0,
            uptime_s=now - self._started,
            stall_s=self._config.health_stall_s,
        )

    def metrics(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "records": self.records,
            "commits": self._checkpoint.commits,
            "aborts": self._checkpoint.aborts,
            "largest_checkpoint_records": self._checkpoint.largest_commit,
            "committed_offsets": {
                p: self._checkpoint.committed_offset(p) for p in self.owned_partitions()
            },
            **self._standby_metrics(),
            **({} if self._collector is None else {"gc_collections": self._collector.collections}),
        }

    def prometheus(self) -> bytes:
        """``/metrics`` in the Prometheus text format (:mod:`runstate.runtime.metrics`)."""
        return self._metrics.exposition()

    def consumer_lag(self) -> dict[int, int]:
        """Per owned partition, records not consumed yet, as the loop last noted them (at
        most :data:`LAG_INTERVAL_S` ago; see :meth:`_note_lag`)."""
        owned = self._checkpoint.partitions
        return {p: n for p, n in self._lag_view.items() if p in owned}

    def restoring_partitions(self) -> frozenset[int]:
        return self._restoring_view

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self._last_poll

    def _standby_metrics(self) -> dict[str, Any]:
        s = self._standbys
        if s is None:
            return {}
        return {
            "standby_records": s.records,
            "standby_ticks": s.ticks,
            "standby_busy_s": round(s.busy_s, 3),
        }

    def stop(self) -> None:
        """Ask the loop to finish: it checkpoints and closes within one poll interval.
        Safe from a signal handler."""
        self._stopping.set()

    def run(self) -> None:
        """Process until :meth:`stop`, then checkpoint and close.

        Raises:
            Fenced: another instance took over, or the consumer failed fatally; this process
                must exit and be restarted.
            CheckpointFailed: at-least-once outputs were not delivered.
        """
        self._checkpoint.start()
        self._consumer.subscribe(
            [self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        clean = False
        try:
            while not self._stopping.is_set():
                try:
                    self._iterate()
                except BrokerLost as exc:
                    self._unreachable_at = time.monotonic()
                    self._rejoin(str(exc))
            self._checkpoint.commit()
            clean = True
        finally:
            if clean:
                self._consumer.close()  # revokes: a last (empty) checkpoint, leaves the group
                self._checkpoint.close()
            if self._standbys is not None:
                self._standbys.close()
            self._store.close()

    def _iterate(self) -> None:
        if self._restoring:
            self._restore_slice()
        aborts = self._checkpoint.aborts
        wait = 0.0 if self._restoring else max(0.001, min(0.1, self._checkpoint.time_left()))
        if self._waiting is not None and self._checkpoint.uncommitted:
            # A query may start waiting for what is processed: look again within the gap.
            wait = min(wait, max(0.001, self._config.read_commit_gap_s))
        messages = self._take(timeout=wait)
        self._last_poll = time.monotonic()
        self._polled = True
        if self._heartbeat is not None:
            self._heartbeat(self._last_poll)
        for msg in messages:  # before an abort below may discard the batch
            err = msg.error()
            if err is not None and _is_fatal(err):
                if not self._broker_lately() or self._consumer_factory is None:
                    raise Fenced(
                        f"the consumer failed fatally ({err.str()}); it can take no partitions"
                        " any more: restart the worker"
                    )
                self._renew_consumer(err.str())
                return
        if self._broker_error is not None and any(m.error() is None for m in messages):
            self._broker_error = None
        if self._checkpoint.aborts != aborts:
            # An abort inside consume() (a revocation's checkpoint failed): records fetched
            # before its rewind must not be processed; seek again and take them afresh.
            self._checkpoint.rewind()
            messages = []
        owned = self._checkpoint.partitions
        batches: dict[int, list[SourceRecord]] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._consumer_error(err)
                continue
            p = msg.partition()
            if p is None or p not in owned:
                continue  # fetched before a revocation, or before a restoring one's pause
            batches.setdefault(p, []).append(_source_record(msg))
        for records in batches.values():
            self._task.process(records, self._checkpoint)
            self.records += len(records)
        if self._expiries is not None and self._expiries.due():
            self._expiries.send_due(self._checkpoint, owned=self._checkpoint.partitions)
        if self._eviction is not None and self._eviction.due():
            self._eviction.evict_due(self._checkpoint, owned=self._checkpoint.partitions)
        if self._standbys is not None and self._standbys.due():
            self._standbys.tick(owned=self._checkpoint.partitions | set(self._restoring))
        if (self._checkpoint.due() or self._read_waits()) and self._checkpoint.commit():
            self._note_positions()
            for listener in self._commit_listeners:
                listener()
        if self._collector is not None:
            self._collector.collect_due()  # here, not in a query thread or mid-batch
        if self._last_poll >= self._lag_due:
            self._note_lag()

    def _note_lag(self) -> None:
        """Note each owned partition's lag for ``/metrics``: the end the consumer last heard
        of (cached from fetch responses, the last stable offset under read_committed; no
        broker request) minus its position. On this thread, because the consumer's calls
        from another thread wait for ``consume()`` to return (seen: minutes); a few
        microseconds per partition, once per :data:`LAG_INTERVAL_S`."""
        self._lag_due = self._last_poll + LAG_INTERVAL_S
        owned = sorted(self._checkpoint.partitions)
        try:
            positions = self._consumer.position([TopicPartition(self._topic, p) for p in owned])
        except KafkaException:
            return  # a figure for /metrics only; the next interval tries again
        lag: dict[int, int] = {}
        for tp in positions:
            try:
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue  # no fetch response yet
            committed = self._checkpoint.committed_offset(tp.partition)
            known = [x for x in (tp.offset, committed) if x is not None and x >= 0]
            lag[tp.partition] = max(0, high - (max(known) if known else max(low, 0)))
        self._lag_view = lag

    def _rejoin(self, why: str) -> None:
        """The producer was fenced while the broker was away: renew it and take every owned
        partition on again as if just assigned (committed offsets, the changelog's tail),
        without leaving the group. What this process made since its last commit is gone;
        what its last commit made is in the changelog even if its store missed it."""
        owned = sorted(self._checkpoint.partitions | set(self._restoring))
        log.warning("%s; partitions %s taken on again from their committed offsets", why, owned)
        self._checkpoint.renew_producer()
        tps = [TopicPartition(self._topic, p) for p in owned]
        self._drop(tps)
        if not tps:
            return
        try:
            self._consumer.incremental_unassign(tps)
            self._assigned(self._consumer, tps)
        except KafkaException as exc:
            # the group is taking them away (its session ran out): its callbacks hand them
            # back once it rejoined
            log.warning("partitions %s not taken on again now: %s", owned, exc)
            self._drop(tps)

    def _broker_lately(self) -> bool:
        """Whether the broker was unreachable in the last two minutes."""
        seen = [t for t in (self._unreachable_at, self._checkpoint.unreachable_at) if t is not None]
        return bool(seen) and time.monotonic() - max(seen) < BROKER_LATELY_S

    def _renew_consumer(self, why: str) -> None:
        """The consumer failed fatally after the broker was away (a static member fenced by
        its own rejoin once its session ran out): drop everything uncommitted and every
        partition, and join the group again with a fresh consumer, in the same process."""
        log.warning("the consumer failed after the broker was away (%s); joining again", why)
        self._checkpoint.abort(f"consumer renewed: {why}")
        owned = sorted(self._checkpoint.partitions | set(self._restoring))
        self._drop([TopicPartition(self._topic, p) for p in owned])
        old = self._consumer
        assert self._consumer_factory is not None
        self._consumer = self._consumer_factory()
        self._checkpoint.use_consumer(self._consumer)
        try:
            old.close()  # its callbacks find nothing left to commit or drop
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the failed consumer: %s", exc)
        self._consumer.subscribe(
            [self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _note_positions(self) -> None:
        """Right after a checkpoint every record consume() returned is processed and
        committed, so the consumer's position is past them and past only markers beyond."""
        owned = self._checkpoint.partitions
        try:
            positions = self._consumer.position(
                [TopicPartition(self._topic, p) for p in sorted(owned)]
            )
        except KafkaException:
            return  # a figure for readers only; the next checkpoint tries again
        self._past_markers = {
            tp.partition: tp.offset for tp in positions if tp.error is None and tp.offset >= 0
        }

    def _take(self, *, timeout: float) -> list[Message]:
        """Up to a batch of records without waiting for a full one: what is fetched already,
        else the first record to arrive within ``timeout`` and whatever came with it.
        (``consume(n, timeout)`` alone waits for n records or the timeout, which at low rates
        adds the whole timeout to every event's latency.) Never more than the checkpoint may
        still take (``checkpoint_max_records``), so no checkpoint holds more."""
        n = self._config.batch_size
        left = self._checkpoint.records_left()
        if left is not None:
            n = min(n, left)
        messages = self._consumer.consume(n, timeout=0)
        if not messages:
            messages = self._consumer.consume(1, timeout=timeout)
            if messages and n > 1:
                messages += self._consumer.consume(n - 1, timeout=0)
        return messages

    def _consumer_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._broker_error = err.str()
            self._unreachable_at = time.monotonic()
        log.warning("consumer: %s", err.str())

    # -- rebalance callbacks (run inside consume()) ----------------------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._lost_reason = None  # in the group again
        if not partitions:
            return
        self._assigning = True
        try:
            committed = self._stable_offsets(consumer, [tp.partition for tp in partitions])
            start: list[TopicPartition] = []
            for tp in committed:
                standby = None if self._standbys is None else self._standbys.promote(tp.partition)
                store = standby if standby is not None else self._open(tp.partition)
                offset = tp.offset if tp.offset >= 0 else None
                self._restore.begin(store)
                self._restoring[tp.partition] = offset
                start.append(_at(self._topic, tp.partition, offset))
                log.info(
                    "partition %s assigned: restoring its store, then consuming from %s",
                    tp.partition,
                    offset,
                )
            self._restoring_view = frozenset(self._restoring)
        finally:
            self._assigning = False
        consumer.incremental_assign(start)
        consumer.pause(start)

    def _restore_slice(self) -> None:
        """One bounded slice of the pending restores; hand over the partitions it finished.

        A restored partition is sought to its committed offset while still paused (what was
        fetched before the pause is dropped, and any record the loop skipped while it was
        not owned is fetched again), then taken on by the checkpoint, then resumed.
        """
        try:
            finished = self._restore.step()
        except RestoreError as exc:  # the broker is away: the next slice tries again
            self._broker_error = str(exc)
            self._unreachable_at = time.monotonic()
            log.warning("restoring partitions %s: %s", sorted(self._restoring), exc)
            return
        for store in finished:
            p = store.partition
            offset = self._restoring.pop(p)
            tp = _at(self._topic, p, offset)
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                # taken from us while it restored (a session that ran out during a broker
                # outage): the rebalance callbacks follow; give the store back meanwhile
                log.warning("partition %s restored but not assigned any more: %s", p, exc)
                store.close()
                continue
            with self._partition_lock:
                self._checkpoint.add_partition(p, store, offset)
            self._consumer.resume([tp])
            log.info("partition %s restored: consuming from %s", p, offset)
        self._restoring_view = frozenset(self._restoring)

    def _open(self, partition: int) -> PartitionStore:
        """The partition's store; a damaged one is dropped and restored from scratch."""
        try:
            return self._store.open(partition)
        except StoreDamaged as exc:
            log.warning("partition %s: local store damaged (%s); restoring it anew", partition, exc)
            self._store.drop(partition)
            return self._store.open(partition)

    def _stable_offsets(self, consumer: Consumer, partitions: list[int]) -> list[TopicPartition]:
        """The committed offsets, once no transaction that commits offsets for them is open.

        ``read_committed`` makes the broker answer "unstable" while another member's
        transaction holds offsets for these partitions (KIP-447); it is settled when that
        member commits or aborts, at the latest when the broker times its transaction out.
        Restoring before then could miss changelog records that the offsets will cover.
        """
        while True:
            try:
                return consumer.committed(
                    [TopicPartition(self._topic, p) for p in partitions],
                    timeout=self._config.broker_timeout_s,
                )
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or self._stopping.is_set():
                    raise
                log.warning("committed offsets of %s not known yet: %s", partitions, error.str())

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._checkpoint.commit()
        self._drop(partitions)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = sorted(tp.partition for tp in partitions)
        # /health says so until the group assigns partitions again: the consumer may report
        # no error at all while its coordinator is unreachable
        self._lost_reason = (
            f"partitions {lost} lost: the consumer group's session ran out (is the broker"
            " reachable?); waiting to join the group again"
        )
        self._checkpoint.abort(f"partitions {lost} lost")
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        gone = [tp.partition for tp in partitions]
        for restoring in self._restore.cancel([p for p in gone if p in self._restoring]):
            restoring.close()
        for p in gone:
            self._restoring.pop(p, None)
        self._restoring_view = frozenset(self._restoring)
        with self._partition_lock:
            for p in gone:
                store = self._checkpoint.remove_partition(p)
                if store is not None:
                    store.close()
        self._task.forget(gone)
        log.info("partitions %s given up", sorted(gone))


def _at(topic: str, partition: int, offset: int | None) -> TopicPartition:
    return TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset)


def _is_fatal(err: KafkaError) -> bool:
    """Whether the consumer can do nothing more. librdkafka returns a fatal consumer error
    (e.g. a static member fenced by another with its ``group.instance.id``, as after a
    broker restart) as a message whose code is ``_FATAL`` and whose ``fatal()`` is False."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _source_record(msg: Message) -> SourceRecord:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = tuple((str(k), v.encode() if isinstance(v, str) else (v or b"")) for k, v in pairs)
    return SourceRecord(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=_as_bytes(msg.key()),
        value=_as_bytes(msg.value()),
        headers=headers,
    )


def _as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data
