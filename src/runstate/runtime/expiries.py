"""Approval deadlines on the runtime: ApprovalExpired events made by the owning worker.

Every ``interval_s`` the :class:`~runstate.runtime.deadline_timer.DeadlineTimer` reads the
due-time index of each owned partition's committed store, and an ``ApprovalExpired`` for
each approval past due goes into the events topic - inside the checkpoint's transaction like
every other output. Nothing is kept per run in memory and nothing is rebuilt when a
partition is assigned: the index is restored with the store. The event id is derived from
the approval, so a copy (re-sent after ``resend_s``, or sent by the previous owner around a
rebalance) is applied once by the reducer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runstate.runs.deadlines import utc_now
from runstate.runs.keyspace import KeyValueReader
from runstate.runtime.deadline_timer import DeadlineTimer
from runstate.runtime.outputs import Outputs
from runstate.schemas.convert import encode_event
from runstate.streams.producer import HEADER_EVENT_TYPE
from runstate.streams.topics import TopicNames

__all__ = ["ApprovalExpiries"]


class ApprovalExpiries:
    """Expires the owned runs' approvals when due, from the due-time index."""

    def __init__(
        self,
        reader: Callable[[int], KeyValueReader | None],
        *,
        names: TopicNames,
        worker_id: str,
        interval_s: float = 5.0,
        resend_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = names
        self._interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self.timer = DeadlineTimer(
            reader, producer=f"runstate-runtime/{worker_id}", resend_s=resend_s
        )

    def due(self) -> bool:
        return self._clock() - self._last >= self._interval_s

    def send_due(self, outputs: Outputs, *, owned: set[int]) -> int:
        """Produce an ApprovalExpired for each owned run past due; returns how many."""
        self._last = self._clock()
        sent = 0
        for partition, event in self.timer.due(owned, utc_now(), clock=self._last):
            outputs.produce(
                self._names.events,
                event.run_id.encode(),
                encode_event(event),
                partition=partition,
                headers=[(HEADER_EVENT_TYPE, event.event_type.encode())],
            )
            sent += 1
        return sent
