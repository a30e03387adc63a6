"""What the agent SDK needs from outside: where events go, and what time it is.

Protocols, so the SDK runs the same over Kafka (:class:`~runstate.streams.producer.EventProducer`)
and over :class:`~runstate.agents.memory.InMemoryRuns` in unit tests, and so retry waits can
be tested with a clock that does not sleep.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, runtime_checkable

from runstate.schemas.events import AgentEvent
from runstate.streams.producer import Delivery

__all__ = ["Clock", "EventSink", "ManualClock", "QueueingSink", "SystemClock"]

E = TypeVar("E", bound=AgentEvent)


class EventSink(Protocol):
    """Builds and sends events; ``emit`` returns only once the event is stored."""

    def new_event(
        self, cls: type[E], run_id: str, *, data_subject: str | None = None, **fields: Any
    ) -> E:
        """An event of ``cls``; a sink that seals personal fields seals them for
        ``data_subject`` (the run id when None; not ``subject``: ApprovalRequested has a field
        of that name)."""
        ...

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery: ...


@runtime_checkable
class QueueingSink(EventSink, Protocol):
    """A sink that can also queue an event without waiting for it, keeping the order of
    events per run (:class:`~runstate.streams.producer.EventProducer`). The SDK queues a
    step's StepStarted and waits once, for its StepCompleted: one round trip per step."""

    def send(self, event: AgentEvent) -> Future[Delivery]: ...

    def flush(self, timeout_s: float = 60.0) -> None: ...


class Clock(Protocol):
    """Now, and waiting; event times and retry waits come from the same clock."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when slept on (or told to): retry waits in zero real time."""

    def __init__(self, start: datetime | None = None) -> None:
        now = start or datetime.now(UTC)
        # Events keep milliseconds; starting on one keeps waits exact in tests.
        self._now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(0.0, seconds))
