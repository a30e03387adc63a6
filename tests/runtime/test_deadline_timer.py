"""The deadline timer reads due approvals from the index and sends each expiry once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from runstate.runs.deadlines import expiry_event_id
from runstate.runs.layout import run_writes
from runstate.runs.state import Approval, ApprovalOutcome, RunState, RunStatus
from runstate.runtime.deadline_timer import DeadlineTimer
from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.schemas.events import ApproverKind
from tests.factories import T0
from tests.runs.conftest import RunStateFactory


def _waiting(make: RunStateFactory, run_id: str, due_in: timedelta) -> RunState:
    approval = Approval(
        step="check",
        approver="ops",
        approver_kind=ApproverKind.GROUP,
        subject_hash=f"sha256:{run_id}",
        subject="s",
        requested_at=T0 - timedelta(hours=1),
        due_at=T0 + due_in,
    )
    return make(run_id=run_id, status=RunStatus.WAITING_APPROVAL, approval=approval)


def test_only_pending_approvals_past_due_expire_once_until_resend(
    run_state_factory: RunStateFactory,
) -> None:
    store = MemoryPartitionStore(2)
    overdue = _waiting(run_state_factory, "late", timedelta(minutes=-5))
    future = _waiting(run_state_factory, "later", timedelta(minutes=5))
    assert overdue.approval is not None
    decided = replace(
        _waiting(run_state_factory, "decided", timedelta(minutes=-5)),
        status=RunStatus.IN_PROGRESS,
        approval=replace(overdue.approval, outcome=ApprovalOutcome.GRANTED),
    )
    for i, state in enumerate([overdue, future, decided]):
        store.apply(run_writes(None, state), changelog_offset=i)
    timer = DeadlineTimer(lambda p: store if p == 2 else None, producer="w1", resend_s=30)

    first = [e for _p, e in timer.due([2, 5], T0, clock=100.0)]
    assert [e.run_id for e in first] == ["late"]
    assert timer.due([2], T0, clock=100.5) == []
    assert first[0].event_id == expiry_event_id("late", "sha256:late", overdue.approval.due_at)
    assert first[0].occurred_at >= overdue.approval.due_at
    assert timer.due([2], T0, clock=110.0) == []  # sent, not yet applied: not again
    assert [(p, e.run_id) for p, e in timer.due([2], T0, clock=131.0)] == [(2, "late")]

    expired = replace(
        overdue,
        status=RunStatus.IN_PROGRESS,
        approval=replace(overdue.approval, outcome=ApprovalOutcome.EXPIRED),
    )
    store.apply(run_writes(overdue, expired), changelog_offset=9)
    ten_past = timer.due([2], T0 + timedelta(minutes=10), clock=300.0)
    assert [e.run_id for _p, e in ten_past] == ["later"]  # "late" left the index when applied


def test_a_tick_sends_at_most_its_limit(run_state_factory: RunStateFactory) -> None:
    store = MemoryPartitionStore(0)
    for i in range(5):
        state = _waiting(run_state_factory, f"r{i}", timedelta(minutes=-i - 1))
        store.apply(run_writes(None, state), changelog_offset=i)
    timer = DeadlineTimer(lambda p: store, producer="w1", limit=2)
    assert len(timer.due([0], T0, clock=0.0)) == 2
    assert len(timer.due([0], T0, clock=1.0)) == 2
    assert len(timer.due([0], T0, clock=2.0)) == 1
    assert timer.due([0], T0, clock=3.0) == []
