"""Approvals and external actions: the reducer's rules for people and other systems."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runstate.errors import ApprovalError, IllegalTransition
from runstate.runs.reducer import (
    Applied,
    DuplicateWhy,
    RejectCode,
    Rejected,
    apply,
    is_overdue,
)
from runstate.runs.state import ActionState, ApprovalOutcome, RunStatus
from runstate.schemas.events import (
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ExternalActionIntended,
    ExternalActionRecorded,
    StepStarted,
)
from tests.factories import RunBuilder
from tests.runs.conftest import (
    BuilderFactory,
    applied,
    duplicate,
    folded,
    rejected,
    running,
)

# --- approvals -------------------------------------------------------------------------


def waiting(builder: BuilderFactory) -> RunBuilder:
    b = builder()
    b.step("collect")
    b.request_approval("collect", subject_hash="h1")
    return b


def test_approval_requested_waits(builder: BuilderFactory) -> None:
    b = waiting(builder)
    s = folded(b)
    a = s.approval
    assert s.status is RunStatus.WAITING_APPROVAL
    assert a is not None
    assert (a.outcome, a.step, a.approver, a.subject_hash, a.subject) == (
        ApprovalOutcome.PENDING,
        "collect",
        "managers",
        "h1",
        "Buy 3 laptops",
    )
    assert a.requested_at == b.events[-1].occurred_at


@pytest.mark.parametrize(
    ("decision", "outcome", "by"),
    [
        (ApprovalGranted, ApprovalOutcome.GRANTED, "alice"),
        (ApprovalRejected, ApprovalOutcome.REJECTED, "bob"),
    ],
)
def test_a_decision_returns_the_run_to_progress(
    builder: BuilderFactory,
    decision: type[ApprovalGranted | ApprovalRejected],
    outcome: ApprovalOutcome,
    by: str,
) -> None:
    b = waiting(builder)
    before = folded(b)
    event = b.emit(decision, by=by, subject_hash="h1", comment="c")
    result = apply(before, event)
    assert isinstance(result, Applied)
    s, change = result.state, result.change
    assert s.status is RunStatus.IN_PROGRESS
    assert s.approval is not None
    assert (s.approval.outcome, s.approval.decided_by, s.approval.comment) == (outcome, by, "c")
    assert s.approval.decided_at == event.occurred_at
    assert (change.from_status, change.to_status, change.approval_outcome, change.decided_by) == (
        RunStatus.WAITING_APPROVAL,
        RunStatus.IN_PROGRESS,
        outcome,
        by,
    )
    same = event.model_copy(update={"event_id": "again"})
    assert duplicate(s, same) is DuplicateWhy.ALREADY_REFLECTED
    other = b.emit(decision, by="someone-else", subject_hash="h1")
    assert rejected(s, other) is RejectCode.NO_PENDING_APPROVAL


def test_a_decision_on_a_stale_subject_is_rejected(builder: BuilderFactory) -> None:
    b = waiting(builder)
    outcome = apply(folded(b), b.emit(ApprovalGranted, by="alice", subject_hash="old"))
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.STALE_SUBJECT
    assert isinstance(outcome.as_error(), ApprovalError)


def test_a_decision_with_nothing_pending_is_rejected(builder: BuilderFactory) -> None:
    b = builder()
    grant = b.emit(ApprovalGranted, by="alice", subject_hash="h1")
    assert rejected(folded(builder()), grant) is RejectCode.NO_PENDING_APPROVAL


def test_expiry_puts_the_run_on_its_expiry_path(builder: BuilderFactory) -> None:
    b = builder()
    b.step("collect")
    b.approval("collect", outcome="expired", subject_hash="h1")
    s = folded(b)
    assert s.status is RunStatus.IN_PROGRESS
    assert s.approval is not None
    assert (s.approval.outcome, s.approval.decided_by) == (ApprovalOutcome.EXPIRED, None)
    late_grant = b.emit(ApprovalGranted, by="alice", subject_hash="h1")
    assert rejected(s, late_grant) is RejectCode.NO_PENDING_APPROVAL


def test_an_expiry_after_a_grant_changes_nothing(builder: BuilderFactory) -> None:
    b = waiting(builder)
    requested = b.events[-1]
    assert hasattr(requested, "due_at")
    b.emit(ApprovalGranted, by="alice", subject_hash="h1")
    s = folded(b)
    expiry = b.emit(
        ApprovalExpired, at=requested.due_at, subject_hash="h1", due_at=requested.due_at
    )
    assert duplicate(s, expiry) is DuplicateWhy.SUPERSEDED
    assert s.approval is not None and s.approval.outcome is ApprovalOutcome.GRANTED


def test_an_expiry_for_an_older_request_or_too_early(builder: BuilderFactory) -> None:
    b = waiting(builder)
    due = b.events[-1].due_at  # type: ignore[attr-defined]
    s = folded(b)
    assert duplicate(s, b.emit(ApprovalExpired, subject_hash="h0", due_at=due)) is (
        DuplicateWhy.SUPERSEDED
    )
    earlier_due = due - timedelta(minutes=5)
    assert duplicate(s, b.emit(ApprovalExpired, subject_hash="h1", due_at=earlier_due)) is (
        DuplicateWhy.SUPERSEDED
    )
    assert rejected(s, b.emit(ApprovalExpired, subject_hash="h1", due_at=due)) is (
        RejectCode.PREMATURE_EXPIRY
    )
    never = folded(builder())
    assert rejected(never, b.emit(ApprovalExpired, subject_hash="h1", due_at=due)) is (
        RejectCode.NO_PENDING_APPROVAL
    )


def test_while_waiting_only_decisions_endings_and_facts_apply(builder: BuilderFactory) -> None:
    b = waiting(builder)
    s = folded(b)
    outcome = apply(s, b.emit(StepStarted, step="check", step_index=1, attempt=1))
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.ILLEGAL_TRANSITION
    assert "pending approval" in outcome.reason
    assert isinstance(outcome.as_error(), IllegalTransition)
    assert rejected(s, b.request_approval("collect", subject_hash="h2")) is (
        RejectCode.ILLEGAL_TRANSITION
    )
    assert rejected(s, b.complete()) is RejectCode.ILLEGAL_TRANSITION
    assert applied(s, b.model_call()).status is RunStatus.WAITING_APPROVAL
    assert applied(s, b.cancel()).status is RunStatus.CANCELLED
    assert applied(s, b.fail()).status is RunStatus.FAILED


def test_a_rejected_approval_may_be_requested_again(builder: BuilderFactory) -> None:
    b = builder()
    b.step("collect")
    b.approval("collect", outcome="rejected", subject_hash="h1")
    b.request_approval("collect", subject_hash="h2")
    s = folded(b)
    assert s.status is RunStatus.WAITING_APPROVAL
    assert s.approval is not None
    assert (s.approval.subject_hash, s.approval.outcome) == ("h2", ApprovalOutcome.PENDING)


def test_is_overdue(builder: BuilderFactory) -> None:
    b = waiting(builder)
    s = folded(b)
    assert s.approval is not None
    due = s.approval.due_at
    assert not is_overdue(s, due - timedelta(milliseconds=1))
    assert is_overdue(s, due)
    assert not is_overdue(None, due)
    decided = applied(s, b.emit(ApprovalGranted, by="alice", subject_hash="h1"))
    assert not is_overdue(decided, due + timedelta(days=1))
    cancelled = applied(s, b.cancel())
    assert not is_overdue(cancelled, due + timedelta(days=1))


# --- external actions ------------------------------------------------------------------


def intend(b: RunBuilder, key: str = "k1", system: str = "email") -> ExternalActionIntended:
    return b.emit(ExternalActionIntended, step="collect", idempotency_key=key, system=system)


def record(b: RunBuilder, key: str = "k1", external_id: str = "m-1") -> ExternalActionRecorded:
    return b.emit(
        ExternalActionRecorded,
        step="collect",
        idempotency_key=key,
        system="email",
        external_id=external_id,
        output_ref="s3://r",
    )


def test_external_action_intended_then_recorded(builder: BuilderFactory) -> None:
    b = running(builder)
    intended = intend(b)
    s = folded(b)
    assert s.unrecorded_actions() == s.external_actions
    a = s.external_action("k1")
    assert a is not None
    assert (a.state, a.system, a.intended_at) == (
        ActionState.INTENDED,
        "email",
        intended.occurred_at,
    )
    assert duplicate(s, intend(b)) is DuplicateWhy.ALREADY_REFLECTED
    assert rejected(s, intend(b, system="crm")) is RejectCode.ACTION_CONFLICT
    done = record(b)
    s = applied(s, done)
    a = s.external_action("k1")
    assert a is not None
    assert (a.state, a.external_id, a.output_ref, a.recorded_at) == (
        ActionState.RECORDED,
        "m-1",
        "s3://r",
        done.occurred_at,
    )
    assert s.unrecorded_actions() == ()
    assert duplicate(s, record(b)) is DuplicateWhy.ALREADY_REFLECTED
    assert rejected(s, record(b, external_id="m-2")) is RejectCode.ACTION_CONFLICT


def test_recorded_without_intended_is_rejected(builder: BuilderFactory) -> None:
    b = running(builder)
    assert rejected(folded(b), record(b)) is RejectCode.ACTION_NOT_INTENDED


def test_actions_while_waiting_and_after_the_end(builder: BuilderFactory) -> None:
    b = running(builder)
    intend(b)
    b.request_approval("collect")
    s = folded(b)
    assert rejected(s, intend(b, key="k2")) is RejectCode.ILLEGAL_TRANSITION
    b.fail(needs_attention=True)
    s = folded(b)
    assert rejected(s, intend(b, key="k2")) is RejectCode.RUN_ENDED
    # An operator reconciling the action after the run failed: the fact is kept.
    s = applied(s, record(b))
    assert (s.status, s.needs_attention) == (RunStatus.FAILED, True)
