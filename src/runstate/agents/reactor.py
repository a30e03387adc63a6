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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runstate.errors import DecodeError
from runstate.processors.state import ApprovalOutcome, RunStateChanged, RunStatus
from runstate.processors.state_codec import StateCodec

__all__ = ["ChangeFilter", "ChangeHandler", "Reactor", "ReactorStats"]

log = logging.getLogger(__name__)

ChangeHandler = Callable[[RunStateChanged], None]


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
        for flt, handler in self._handlers:
            if flt.matches(change):
                self._call(handler, change)
                stats.handler_calls += 1
        self._handled[change.run_id] = change.version
        self._handled.move_to_end(change.run_id)
        while len(self._handled) > self._remember:
            self._handled.popitem(last=False)
        stats.handled += 1
        stats.by_event[change.event_type] = stats.by_event.get(change.event_type, 0) + 1
        return True

    def _call(self, handler: ChangeHandler, change: RunStateChanged) -> None:
        for attempt in range(1, self.handler_attempts + 1):
            try:
                handler(change)
                return
            except Exception:
                name = getattr(handler, "__name__", repr(handler))
                if attempt == self.handler_attempts:
                    log.exception(
                        "handler %s failed on %s v%s", name, change.run_id, change.version
                    )
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

        Raises:
            Exception: a handler kept failing; its change is not committed.
        """
        from confluent_kafka import Consumer  # the only Kafka-bound part

        consumer = Consumer(
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
        try:
            consumer.subscribe([self.topic])
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if until is not None and until():
                    break
                msg = consumer.poll(poll_s)
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
