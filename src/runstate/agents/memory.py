"""An in-process event log and run-state reader: the real reducer, no Kafka.

:class:`InMemoryRuns` is both the SDK's event sink and its state reader. Each emitted event
gets the next offset and is folded with :func:`runstate.runs.reducer.apply` exactly as
the processor would fold it, so unit tests of agents (and of the SDK) exercise the real rules -
rejections included - without a broker. It is not a mock: nothing is scripted, and a test can
"crash" an agent simply by dropping its :class:`~runstate.agents.steps.DurableRun` and
attaching a new one to the same ``InMemoryRuns``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from runstate.errors import ValidationError
from runstate.runs.reducer import Applied, Rejected, apply
from runstate.runs.run_view import RunFilter
from runstate.runs.state import RunState, RunStateChanged, RunStatus, StepPhase
from runstate.schemas.events import AgentEvent
from runstate.schemas.ids import uuid7
from runstate.schemas.sealed import EventSealer
from runstate.streams.producer import Delivery

__all__ = ["InMemoryRuns", "RejectedEvent"]

E = TypeVar("E", bound=AgentEvent)


@dataclass(frozen=True, slots=True)
class RejectedEvent:
    """An event the reducer refused (the processor would have dead-lettered it)."""

    offset: int
    event: AgentEvent
    rejection: Rejected


class InMemoryRuns:
    """Events and states of any number of runs in one process; thread-safe."""

    topic = "memory.events"

    def __init__(
        self, *, producer_name: str = "runstate-memory", sealer: EventSealer | None = None
    ) -> None:
        self.producer_name = producer_name
        self.sealer = sealer
        self.events: list[AgentEvent] = []
        self.changes: list[RunStateChanged] = []
        self.rejected: list[RejectedEvent] = []
        self._states: dict[str, RunState] = {}
        self._last: dict[str, Delivery] = {}
        self._lock = threading.Lock()

    def new_event(
        self, cls: type[E], run_id: str, *, data_subject: str | None = None, **fields: Any
    ) -> E:
        """Like :meth:`runstate.streams.producer.EventProducer.new_event` (sealing too, when
        given a sealer).

        Raises:
            ValidationError: a field is missing or has the wrong type.
        """
        fields.setdefault("event_id", uuid7())
        fields.setdefault("occurred_at", datetime.now(UTC))
        fields.setdefault("producer", self.producer_name)
        try:
            event = cls(run_id=run_id, **fields)
        except ValueError as exc:
            raise ValidationError(f"invalid {cls.__name__} for run {run_id!r}: {exc}") from exc
        if self.sealer is None:
            return event
        sealed = self.sealer.seal(event, data_subject or run_id)
        assert isinstance(sealed, cls)
        return sealed

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery:
        """Append ``event`` and apply it at once; returns where it was "stored"."""
        with self._lock:
            offset = len(self.events)
            self.events.append(event)
            outcome = apply(self._states.get(event.run_id), event, offset=offset)
            if isinstance(outcome, Applied):
                self._states[event.run_id] = outcome.state
                self.changes.append(outcome.change)
            elif isinstance(outcome, Rejected):
                self.rejected.append(RejectedEvent(offset, event, outcome))
            delivery = Delivery(self.topic, 0, offset, event.run_id, event.event_id)
            self._last[event.run_id] = delivery
            return delivery

    def read(self, run_id: str, *, after: Any = None) -> RunState | None:
        """The run's state; every emitted event is already applied, so ``after`` is moot."""
        with self._lock:
            return self._states.get(run_id)

    def latest_position(self, run_id: str) -> Delivery | None:
        """The last event emitted for the run."""
        with self._lock:
            return self._last.get(run_id)

    def events_of(self, run_id: str) -> list[AgentEvent]:
        """Every event emitted for the run, in order (rejected ones included)."""
        with self._lock:
            return [e for e in self.events if e.run_id == run_id]

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        owner: str | None = None,
        approver: str | None = None,
        overdue: bool = False,
        step: str | None = None,
        phase: StepPhase | str | None = None,
        idle_for: timedelta | str | None = None,
        require_complete: bool = False,
    ) -> list[RunState]:
        """Every run's state matching the filters, as
        :meth:`~runstate.agents.client.HttpRunStateReader.list` selects them (the same
        :class:`~runstate.runs.run_view.RunFilter`, "now" is the wall clock);
        ``require_complete`` is moot.

        Raises:
            ValueError: an unknown status or phase, or ``idle_for`` is not a positive duration.
        """
        flt = RunFilter.of(
            status=status,
            owner=owner,
            approver=approver,
            overdue=overdue,
            step=step,
            phase=phase,
            idle_for=idle_for,
        )
        now = datetime.now(UTC)
        with self._lock:
            return [s for s in self._states.values() if flt.matches(s, now)]
