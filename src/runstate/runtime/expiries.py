"""Approval deadlines on the runtime: ApprovalExpired events made by the owning worker.

The worker keeps a :class:`~runstate.runs.deadlines.DeadlineIndex` of the pending approvals
on its partitions (filled from the restored store when a partition is assigned, kept
current by the task as states change) and, every ``interval_s``, produces an
``ApprovalExpired`` into the events topic for each one past due - inside the checkpoint's
transaction like every other output. Its event id is derived from the approval, so a copy
(re-sent after ``resend_s``, or sent by the previous owner around a rebalance) is applied
once by the reducer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from runstate.runs.deadlines import DeadlineIndex, expiry_event, utc_now
from runstate.runs.state import RunState
from runstate.schemas.convert import encode_event
from runstate.streams.producer import HEADER_EVENT_TYPE
from runstate.streams.topics import TopicNames

__all__ = ["ApprovalExpiries", "EventOutputs"]


class EventOutputs(Protocol):
    """Where expiries go (the checkpoint)."""

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...


class ApprovalExpiries:
    """Tracks pending approvals of owned runs and expires them when due."""

    def __init__(
        self,
        *,
        names: TopicNames,
        worker_id: str,
        interval_s: float = 5.0,
        resend_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = names
        self._producer_name = f"runstate-runtime/{worker_id}"
        self._interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.index = DeadlineIndex(resend_s=resend_s)

    def observe(self, partition: int, state: RunState) -> None:
        """Track the run's deadline after a change (or stop tracking it)."""
        self.index.observe(partition, state)

    def load_partition(self, partition: int, states: Iterable[RunState]) -> None:
        """Take the pending approvals of a newly assigned (restored) partition."""
        for state in states:
            self.index.observe(partition, state)

    def due(self) -> bool:
        return self._clock() - self._last >= self._interval_s

    def send_due(self, outputs: EventOutputs, *, owned: set[int]) -> int:
        """Produce an ApprovalExpired for each owned run past due; returns how many."""
        self._last = self._clock()
        now = utc_now()
        sent = 0
        for deadline in self.index.due(now, owned=owned, clock=self._last):
            event = expiry_event(deadline, now=now, producer=self._producer_name)
            outputs.produce(
                self._names.events,
                event.run_id.encode(),
                encode_event(event),
                partition=deadline.partition,
                headers=[(HEADER_EVENT_TYPE, event.event_type.encode())],
            )
            self.index.mark_sent(deadline, clock=self._last)
            sent += 1
        return sent
