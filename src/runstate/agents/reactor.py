"""Reactor: run code when runs change - resume an approved run, page a person, notify.

A :class:`Reactor` consumes the state-changes topic (one ``RunStateChanged`` per applied
event) in its own consumer group and calls the handlers whose filter matches::

    reactor = Reactor(bootstrap_servers=..., topic=names.state_changes, group_id="resumer")

    @reactor.on(event="ApprovalGranted")
    def resume(change: RunStateChanged) -> None:
        start_agent_process(change.run_id)

    reactor.run(max_seconds=60)

Delivery contract - at least once, in order per run:

* The offset of a change is committed only after every matching handler returned, so a
  crash (of the reactor or a handler) redelivers the change: handlers must be idempotent.
  The SDK's steps are, so "resume the run" is a safe handler.
* Changes of one run arrive in version order (one partition per run). Within one reactor
  process a change whose ``(run_id, version)`` was already handled is skipped; that memory
  is in process only (bounded, least recently seen runs forgotten first), so after a restart
  the changes since the last commit are handled again.
* A handler that raises is retried (``handler_attempts`` times, with a short pause); if it
  still fails, :meth:`Reactor.run` raises and the change stays uncommitted - the next run of
  the reactor starts from it.

Filters match the change record: ``status`` is the status *after* the event, ``approval``
the run's latest approval outcome - which stays ``granted`` on every later change of the
run. To act once on the decision itself, filter on ``event="ApprovalGranted"``.

Retries: a run suspended on a ``RetryScheduled`` step is resumed when its not-before time
has come, never earlier, also when the reactor restarted while the run waited
(:mod:`runstate.agents.retry_due` explains how)::

    reactor = Reactor(..., group_id="retrier", runs=HttpRunStateReader(url, ...))

    @reactor.on_retry_due
    def retry(due: RetryDue) -> None:
        start_agent_process(due.run_id)

Retry handlers run in the reactor's loop, under the same contract as change handlers:
at least once (idempotent), ``handler_attempts`` tries, then :meth:`Reactor.run` raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from runstate.agents.ports import Clock, SystemClock
from runstate.agents.retry_due import RetryDue, RetryTimetable, WaitingRuns
from runstate.errors import DecodeError, QueryError
from runstate.runs.state import ApprovalOutcome, RunStateChanged, RunStatus
from runstate.runs.state_codec import StateCodec
from runstate.streams.partitioning import partition_for

__all__ = ["ChangeFilter", "ChangeHandler", "Reactor", "ReactorStats", "RetryHandler"]

log = logging.getLogger(__name__)

ChangeHandler = Callable[[RunStateChanged], None]
RetryHandler = Callable[[RetryDue], None]
_T = TypeVar("_T")

#: Pause between attempts to rebuild the retry timetable while the query API cannot answer.
_REBUILD_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """Which changes a handler wants; every given criterion must hold."""

    status: RunStatus | None = None
    step: str | None = None
    approval: ApprovalOutcome | None = None
    event: str | None = None
    needs_attention: bool | None = None

    def matches(self, change: RunStateChanged) -> bool:
        """Whether ``change`` passes every criterion that is set."""
        return (
            (self.status is None or change.to_status is self.status)
            and (self.step is None or change.step == self.step)
            and (self.approval is None or change.approval_outcome is self.approval)
            and (self.event is None or change.event_type == self.event)
            and (self.needs_attention is None or change.needs_attention == self.needs_attention)
        )


@dataclass
class ReactorStats:
    """What one :meth:`Reactor.run` did."""

    received: int = 0
    handled: int = 0
    duplicates: int = 0
    undecodable: int = 0
    handler_calls: int = 0
    by_event: dict[str, int] = field(default_factory=dict)
    #: Retry handlers called (one per due run version, per handler).
    retry_calls: int = 0
    #: Waiting runs put on the retry timetable from the query API (start, rebalance).
    retries_loaded: int = 0


class _Message(Protocol):
    def error(self) -> Any: ...
    def value(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


class Reactor:
    """Calls handlers for state changes; see the module docstring for the contract.

    Args:
        bootstrap_servers: Kafka.
        topic: the state-changes topic (``TopicNames(prefix).state_changes``).
        group_id: this reactor's consumer group; reactors doing different jobs need
            different groups, replicas of one job share one.
        handler_attempts: tries per handler and change before :meth:`run` gives up.
        remember_runs: how many runs' last handled versions are kept for deduplication.
        consumer_config: extra librdkafka settings.
        runs: where run states are read, for :meth:`on_retry_due` (an
            :class:`~runstate.agents.client.HttpRunStateReader` with ``bootstrap_servers``
            and ``events_topic``).
        clock: when a retry is due; the real clock unless a test passes another.
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        codec: StateCodec | None = None,
        handler_attempts: int = 3,
        remember_runs: int = 100_000,
        consumer_config: dict[str, Any] | None = None,
        runs: WaitingRuns | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.handler_attempts = handler_attempts
        self._codec = codec or StateCodec()
        self._handlers: list[tuple[ChangeFilter, ChangeHandler]] = []
        self._handled: OrderedDict[str, int] = OrderedDict()
        self._remember = remember_runs
        self._config = consumer_config or {}
        self._stop = threading.Event()
        self._runs = runs
        self._clock: Clock = clock or SystemClock()
        self._retry_handlers: list[RetryHandler] = []
        self._timetable: RetryTimetable | None = None
        self._partition_count: int | None = None
        self._to_rebuild: set[int] = set()
        self._rebuild_after = 0.0

    def on(
        self,
        *,
        status: RunStatus | str | None = None,
        step: str | None = None,
        approval: ApprovalOutcome | str | None = None,
        event: str | None = None,
        needs_attention: bool | None = None,
    ) -> Callable[[ChangeHandler], ChangeHandler]:
        """Register the decorated function for changes matching every given criterion.

        Raises:
            ValueError: ``status`` or ``approval`` is not a known value.
        """
        flt = ChangeFilter(
            status=None if status is None else RunStatus(status),
            step=step,
            approval=None if approval is None else ApprovalOutcome(approval),
            event=event,
            needs_attention=needs_attention,
        )

        def register(handler: ChangeHandler) -> ChangeHandler:
            self._handlers.append((flt, handler))
            return handler

        return register

    def on_retry_due(self, handler: RetryHandler) -> RetryHandler:
        """Call ``handler`` when a run's scheduled retry may start (use as a decorator).

        The handler should resume the run (``DurableRun.attach`` and the agent's code, or
        start the agent's process); the run continues at the failed step with its recorded
        data. It is called at or after the run's ``retry_not_before``, once per run version
        in this process; again after a restart if the run still waits.

        Raises:
            ValueError: the reactor was built without ``runs`` to read states from.
        """
        if self._runs is None:
            raise ValueError(
                "on_retry_due needs the run states: build the Reactor with runs="
                "HttpRunStateReader(query_url, bootstrap_servers=..., events_topic=...)"
            )
        if self._timetable is None:
            self._timetable = RetryTimetable(self._runs, self._clock, remember_runs=self._remember)
        self._retry_handlers.append(handler)
        return handler

    @property
    def pending_retries(self) -> dict[str, RetryDue]:
        """Runs this reactor will call back, by run id (a copy; empty without retry handlers)."""
        return {} if self._timetable is None else self._timetable.pending

    def stop(self) -> None:
        """Ask :meth:`run` to return after the change it is handling (thread-safe)."""
        self._stop.set()

    def dispatch(self, change: RunStateChanged, stats: ReactorStats | None = None) -> bool:
        """Call every matching handler once; False if ``(run_id, version)`` was handled.

        Raises:
            Exception: a handler's exception, after ``handler_attempts`` tries.
        """
        stats = stats or ReactorStats()
        last = self._handled.get(change.run_id)
        if last is not None and change.version <= last:
            stats.duplicates += 1
            return False
        where = f"{change.run_id} v{change.version}"
        if self._timetable is not None:
            self._call(self._timetable.observe, change, where)
        for flt, handler in self._handlers:
            if flt.matches(change):
                self._call(handler, change, where)
                stats.handler_calls += 1
        self._handled[change.run_id] = change.version
        self._handled.move_to_end(change.run_id)
        while len(self._handled) > self._remember:
            self._handled.popitem(last=False)
        stats.handled += 1
        stats.by_event[change.event_type] = stats.by_event.get(change.event_type, 0) + 1
        return True

    def call_due_retries(self, stats: ReactorStats | None = None) -> int:
        """Call the retry handlers for every run whose not-before time has come; how many.

        :meth:`run` calls this between polls; tests call it with a manual clock.

        Raises:
            Exception: a retry handler's exception, after ``handler_attempts`` tries; the
                run stays on the timetable (and is loaded again when :meth:`run` restarts).
        """
        if self._timetable is None:
            return 0
        stats = stats or ReactorStats()
        due = self._timetable.due()
        for i, entry in enumerate(due):
            where = f"{entry.run_id} v{entry.version} (retry due {entry.not_before.isoformat()})"
            try:
                for handler in self._retry_handlers:
                    self._call(handler, entry, where)
                    stats.retry_calls += 1
            except Exception:
                self._timetable.restore(due[i:])
                raise
            self._timetable.called(entry)
        return len(due)

    def load_waiting_retries(self, partitions: Iterable[int] | None = None) -> int:
        """Put the runs waiting for a retry on the timetable, from the query API; how many.

        :meth:`run` calls this for the partitions it is assigned, so a restarted reactor
        resumes runs whose ``RetryScheduled`` it committed before. ``None`` loads every run.

        Raises:
            QueryError: the query API is unreachable or did not answer for every partition.
        """
        if self._timetable is None:
            return 0
        return self._timetable.rebuild(owns=self._owner_of(partitions))

    def _owner_of(self, partitions: Iterable[int] | None) -> Callable[[str], bool]:
        if partitions is None or self._partition_count is None:
            return lambda run_id: True
        wanted, count = frozenset(partitions), self._partition_count
        return lambda run_id: partition_for(run_id.encode(), count) in wanted

    def _call(self, handler: Callable[[_T], None], arg: _T, where: str) -> None:
        for attempt in range(1, self.handler_attempts + 1):
            try:
                handler(arg)
                return
            except Exception:
                name = getattr(handler, "__name__", repr(handler))
                if attempt == self.handler_attempts:
                    log.exception("handler %s failed on %s", name, where)
                    raise
                log.warning("handler %s failed (attempt %s); retrying", name, attempt)
                self._stop.wait(0.2 * attempt)

    def run(
        self,
        *,
        max_seconds: float | None = None,
        until: Callable[[], bool] | None = None,
        poll_s: float = 0.2,
    ) -> ReactorStats:
        """Consume and dispatch until :meth:`stop`, ``until()`` is true, or the time is up.

        Between polls, runs whose retry is due are called back (see :meth:`on_retry_due`);
        on every partition assignment the waiting runs of those partitions are loaded from
        ``runs`` (retried every few seconds while the query API cannot answer for all).

        Raises:
            Exception: a handler kept failing. A change handler's change is not committed;
                a retry handler's run is loaded again by the next :meth:`run`.
        """
        from runstate.streams import clients  # the only Kafka-bound part

        consumer = clients.consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                **self._config,
            }
        )
        stats = ReactorStats()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._stop.clear()
        if self._timetable is not None:
            self._timetable.clear()  # what the last run knew; this run's assignment reloads it
        self._to_rebuild.clear()
        try:
            if self._timetable is not None:
                self._partition_count = _partition_count(consumer, self.topic)
            consumer.subscribe(
                [self.topic],
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if until is not None and until():
                    break
                self._rebuild_if_assigned(stats)
                self.call_due_retries(stats)
                msg = consumer.poll(self._poll_timeout(poll_s))
                if msg is None:
                    continue
                if msg.error() is not None:
                    log.warning("reactor %s: %s", self.group_id, msg.error())
                    continue
                self._receive(msg, stats)
                consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
        return stats

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        # Called inside poll(): only note the work, so a slow query API cannot stall it.
        self._to_rebuild.update(tp.partition for tp in partitions)
        self._rebuild_after = 0.0

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        gone = {tp.partition for tp in partitions}
        self._to_rebuild -= gone
        if self._timetable is not None:
            self._timetable.forget(self._owner_of(gone))

    def _rebuild_if_assigned(self, stats: ReactorStats) -> None:
        if not self._to_rebuild or time.monotonic() < self._rebuild_after:
            return
        partitions = set(self._to_rebuild)
        try:
            stats.retries_loaded += self.load_waiting_retries(partitions)
        except QueryError as exc:
            log.warning(
                "reactor %s: cannot list runs waiting for a retry (%s); trying again in %.0fs",
                self.group_id,
                exc,
                _REBUILD_RETRY_S,
            )
            self._rebuild_after = time.monotonic() + _REBUILD_RETRY_S
            return
        self._to_rebuild -= partitions

    def _poll_timeout(self, poll_s: float) -> float:
        upcoming = None if self._timetable is None else self._timetable.seconds_to_next()
        return poll_s if upcoming is None else min(poll_s, upcoming)

    def _receive(self, msg: _Message, stats: ReactorStats) -> None:
        stats.received += 1
        value = msg.value()
        if value is None:
            return
        try:
            change = self._codec.decode_change(value)
        except DecodeError as exc:
            # A record no reader can decode would block the partition forever; skip it loudly.
            stats.undecodable += 1
            log.error(
                "skipping undecodable change %s[%s]@%s: %s",
                msg.topic(),
                msg.partition(),
                msg.offset(),
                exc,
            )
            return
        self.dispatch(change, stats)


def _partition_count(consumer: Any, topic: str) -> int | None:
    """How many partitions ``topic`` has (runs map to them as the producers map them)."""
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
    except Exception as exc:  # KafkaException; the subscription reports it again
        log.warning("cannot read the partitions of %s: %s", topic, exc)
        return None
    return len(found.partitions) if found is not None and found.partitions else None
