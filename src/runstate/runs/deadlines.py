"""Approval deadlines: which runs wait past due, and the ApprovalExpired event for each.

An expiry is an event in the run's history like any other (replay sees it), produced into the
events topic by the worker that owns the run's partition. Its ``event_id`` is derived from
the approval it expires, so if two timers - the old and the new owner around a rebalance, or
one timer twice before the first expiry is applied - produce it, the reducer applies it once
(recent event ids) and ignores any copy once the approval is no longer pending.

The runtime finds the due approvals in its stores' due-time index
(:func:`runstate.runs.run_index.due_approvals`), so nothing here is kept in memory.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from runstate.runs.state import ApprovalOutcome, RunState, RunStatus
from runstate.schemas.events import ApprovalExpired

__all__ = [
    "EXPIRY_NAMESPACE",
    "Deadline",
    "expiry_event",
    "expiry_event_id",
    "pending_deadline",
    "utc_now",
]

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


def utc_now() -> datetime:
    """Now, in UTC, truncated to milliseconds like every event timestamp."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)
