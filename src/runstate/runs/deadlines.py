"""Approval deadlines: which runs wait past due, and the ApprovalExpired event for each.

An expiry is an event in the run's history like any other (replay sees it), produced into the
events topic by the worker that owns the run's partition. Its ``event_id`` is derived from
the approval it expires, so if two timers - the old and the new owner around a rebalance, or
one timer twice before the first expiry is applied - produce it, the reducer applies it once
(recent event ids) and ignores any copy once the approval is no longer pending.

The worker keeps a :class:`DeadlineIndex` in memory instead of scanning RocksDB every tick:
it is rebuilt from a scan of the owned partitions after each rebalance and kept current by
the processor as states change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from runstate.runs.state import ApprovalOutcome, RunState, RunStatus
from runstate.schemas.events import ApprovalExpired

__all__ = ["EXPIRY_NAMESPACE", "Deadline", "DeadlineIndex", "expiry_event", "expiry_event_id"]

#: uuid5 namespace of expiry event ids (fixed forever: changing it would re-expire runs).
EXPIRY_NAMESPACE = uuid.UUID("5b0f6f39-53c1-4a51-9a39-0d3f2a0b7e11")


@dataclass(frozen=True, slots=True)
class Deadline:
    """A pending approval of one run and when it is due."""

    run_id: str
    partition: int
    subject_hash: str
    due_at: datetime


def pending_deadline(partition: int, state: RunState) -> Deadline | None:
    """The run's pending approval deadline, or None if it waits on nothing."""
    a = state.approval
    if (
        state.status is not RunStatus.WAITING_APPROVAL
        or a is None
        or a.outcome is not ApprovalOutcome.PENDING
    ):
        return None
    return Deadline(state.run_id, partition, a.subject_hash, a.due_at)


def expiry_event_id(run_id: str, subject_hash: str, due_at: datetime) -> str:
    """The one event id every expiry of this approval gets, whoever produces it."""
    return str(uuid.uuid5(EXPIRY_NAMESPACE, f"{run_id}\0{subject_hash}\0{due_at.isoformat()}"))


def expiry_event(deadline: Deadline, *, now: datetime, producer: str) -> ApprovalExpired:
    """The ApprovalExpired for ``deadline``; ``occurred_at`` never precedes ``due_at``
    (the reducer rejects premature expiries)."""
    return ApprovalExpired(
        event_id=expiry_event_id(deadline.run_id, deadline.subject_hash, deadline.due_at),
        run_id=deadline.run_id,
        occurred_at=max(now, deadline.due_at),
        producer=producer,
        subject_hash=deadline.subject_hash,
        due_at=deadline.due_at,
    )


class DeadlineIndex:
    """Pending approvals of the runs this worker owns, and which expiries were sent when.

    An expiry is re-sent if the approval is still pending ``resend_s`` after it was sent
    (the first one may have been lost with a crashed producer); copies are harmless.
    """

    def __init__(self, *, resend_s: float = 30.0) -> None:
        self._pending: dict[str, Deadline] = {}
        self._sent: dict[str, float] = {}
        self._resend_s = resend_s

    def __len__(self) -> int:
        return len(self._pending)

    def observe(self, partition: int, state: RunState) -> None:
        """Track the run's deadline after a change (or stop tracking it)."""
        deadline = pending_deadline(partition, state)
        if deadline is None:
            self._pending.pop(state.run_id, None)
            self._sent.pop(state.run_id, None)
        elif self._pending.get(state.run_id) != deadline:
            self._pending[state.run_id] = deadline
            self._sent.pop(state.run_id, None)

    def rebuild(self, states: Iterable[tuple[int, RunState]]) -> None:
        """Start over from a scan of the owned partitions (after a rebalance)."""
        self._pending.clear()
        for partition, state in states:
            deadline = pending_deadline(partition, state)
            if deadline is not None:
                self._pending[state.run_id] = deadline
        self._sent = {k: v for k, v in self._sent.items() if k in self._pending}

    def due(self, now: datetime, *, owned: set[int], clock: float | None = None) -> list[Deadline]:
        """Deadlines past due on owned partitions whose expiry was not sent recently."""
        mono = time.monotonic() if clock is None else clock
        return [
            d
            for d in self._pending.values()
            if d.partition in owned
            and now >= d.due_at
            and mono - self._sent.get(d.run_id, -1e18) >= self._resend_s
        ]

    def mark_sent(self, deadline: Deadline, *, clock: float | None = None) -> None:
        self._sent[deadline.run_id] = time.monotonic() if clock is None else clock


def utc_now() -> datetime:
    """Now, in UTC, truncated to milliseconds like every event timestamp."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)
