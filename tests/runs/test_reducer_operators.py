"""Who may decide an approval, and the operator commands, as the reducer's rules."""

from __future__ import annotations

from typing import Any

import pytest

from runstate.runs.reducer import Applied, RejectCode, Rejected, apply
from runstate.runs.state import ActionState, ApprovalOutcome, RunStatus, StepPhase
from runstate.schemas.events import (
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    ExternalActionResolved,
    FailureReason,
    RunCancelled,
    RunFailed,
    StepRetryRequested,
    StepStarted,
)
from tests.factories import RunBuilder
from tests.runs.conftest import BuilderFactory, applied, folded, rejected

# --- who may decide ----------------------------------------------------------------------


def _asking(b: RunBuilder, approver: str, kind: ApproverKind, *, enforce: bool = True) -> None:
    b.step("collect")
    b.emit(
        ApprovalRequested,
        step="collect",
        approver=approver,
        approver_kind=kind,
        due_at=b.clock + b.tick * 3600,
        subject_hash="h1",
        subject="limit 5000",
        enforce_decider=enforce,
    )


def _decision(b: RunBuilder, *, grant: bool = True, **fields: Any) -> ApprovalGranted:
    values: dict[str, Any] = {"by": "intern.eve", "subject_hash": "h1"}
    values.update(fields)
    cls = ApprovalGranted if grant else ApprovalRejected
    return b.emit(cls, **values)  # type: ignore[return-value]


@pytest.mark.parametrize("grant", [True, False])
def test_someone_else_than_the_requested_user_is_refused(
    builder: BuilderFactory, grant: bool
) -> None:
    b = builder()
    _asking(b, "manager.bob", ApproverKind.USER)
    s = folded(b)
    outcome = apply(s, _decision(b, grant=grant, by_groups=("credit-managers",)))
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.NOT_AUTHORIZED
    assert "intern.eve" in outcome.reason and "manager.bob" in outcome.reason
    # The same decision by the approver is applied.
    after = applied(s, _decision(b, grant=grant, by="manager.bob"))
    assert after.approval is not None
    assert after.approval.decided_by == "manager.bob"
    assert after.approval.override_reason is None


def test_a_group_approval_takes_a_member_by_the_asserted_groups(builder: BuilderFactory) -> None:
    b = builder()
    _asking(b, "credit-managers", ApproverKind.GROUP)
    s = folded(b)
    assert rejected(s, _decision(b, by="manager.bob", by_groups=("sales",))) == (
        RejectCode.NOT_AUTHORIZED
    )
    assert rejected(s, _decision(b, by="credit-managers")) == RejectCode.NOT_AUTHORIZED
    granted = applied(s, _decision(b, by="manager.bob", by_groups=("sales", "credit-managers")))
    assert granted.approval is not None
    assert granted.approval.outcome is ApprovalOutcome.GRANTED


def test_an_admin_decides_only_with_a_reason_and_the_reason_is_kept(
    builder: BuilderFactory,
) -> None:
    b = builder()
    _asking(b, "manager.bob", ApproverKind.USER)
    s = folded(b)
    no_reason = apply(s, _decision(b, by="root.ann", by_roles=("admin",)))
    assert isinstance(no_reason, Rejected)
    assert "override reason" in no_reason.reason
    blank = _decision(b, by="root.ann", by_roles=("admin",), override_reason="  ")
    assert rejected(s, blank) == RejectCode.NOT_AUTHORIZED
    # An override reason without the admin role is not enough either.
    assert rejected(s, _decision(b, by="ops.joe", override_reason="urgent")) == (
        RejectCode.NOT_AUTHORIZED
    )
    event = _decision(b, by="root.ann", by_roles=("admin",), override_reason="bob is on leave")
    outcome = apply(s, event)
    assert isinstance(outcome, Applied)
    a = outcome.state.approval
    assert a is not None
    assert (a.decided_by, a.override_reason) == ("root.ann", "bob is on leave")
    assert outcome.change.reason == "admin override by root.ann: bob is on leave"


def test_requests_before_v3_accept_any_decider(builder: BuilderFactory) -> None:
    """Replaying old history gives the old result: enforce_decider reads as false."""
    b = builder()
    _asking(b, "manager.bob", ApproverKind.USER, enforce=False)
    s = folded(b)
    granted = applied(s, _decision(b))
    assert granted.approval is not None
    assert granted.approval.decided_by == "intern.eve"


def test_a_refused_decider_on_a_stale_subject_hears_about_the_subject_first(
    builder: BuilderFactory,
) -> None:
    b = builder()
    _asking(b, "manager.bob", ApproverKind.USER)
    s = folded(b)
    assert rejected(s, _decision(b, subject_hash="old")) == RejectCode.STALE_SUBJECT


# --- retry-step --------------------------------------------------------------------------


def _given_up(b: RunBuilder) -> None:
    """collect done; score fails twice and the run gives up (retries spent)."""
    b.step("collect")
    b.step("score", fail_times=1, complete=False)
    b.fail_step("score", attempt=2, reason=FailureReason.TIMEOUT)
    b.emit(RunFailed, step="score", reason=FailureReason.TIMEOUT, message="retries spent")


def test_retry_step_brings_a_given_up_run_back_at_its_step(builder: BuilderFactory) -> None:
    b = builder()
    _given_up(b)
    s = folded(b)
    assert (s.status, s.needs_person) == (RunStatus.FAILED, True)
    event = b.emit(StepRetryRequested, by="ops.joe", step="score", reason="service fixed")
    outcome = apply(s, event)
    assert isinstance(outcome, Applied)
    back = outcome.state
    assert (back.status, back.current_step, back.step_phase, back.step_attempt) == (
        RunStatus.IN_PROGRESS,
        "score",
        StepPhase.RETRY_SCHEDULED,
        2,
    )
    assert back.retry_not_before is None
    assert not back.needs_person
    assert [c.step for c in back.completed_steps] == ["collect"]
    assert outcome.change.reason == "retry requested by ops.joe: service fixed"
    # The agent's next attempt is legal; a second request while it runs is refused.
    started = applied(back, b.emit(StepStarted, step="score", step_index=1, attempt=3))
    assert started.step_phase is StepPhase.RUNNING
    again = b.emit(StepRetryRequested, by="ops.joe", step="score")
    assert rejected(started, again) == RejectCode.RUN_NOT_FAILED


@pytest.mark.parametrize(
    ("end", "code"),
    [("complete", RejectCode.RUN_NOT_FAILED), ("cancel", RejectCode.RUN_NOT_FAILED)],
)
def test_retry_step_of_a_run_that_did_not_fail_is_refused(
    builder: BuilderFactory, end: str, code: RejectCode
) -> None:
    b = builder()
    b.step("collect")
    getattr(b, end)()
    s = folded(b)
    outcome = apply(s, b.emit(StepRetryRequested, by="ops.joe", step="collect"))
    assert isinstance(outcome, Rejected)
    assert outcome.code is code
    assert "only a failed run" in outcome.reason


def test_retry_step_names_the_step_the_run_stopped_at(builder: BuilderFactory) -> None:
    b = builder()
    _given_up(b)
    s = folded(b)
    outcome = apply(s, b.emit(StepRetryRequested, by="ops.joe", step="collect"))
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.STEP_NOT_RETRYABLE
    assert "stopped at step 'score'" in outcome.reason


def test_a_failed_run_is_closed_by_cancel_and_leaves_the_attention_list(
    builder: BuilderFactory,
) -> None:
    b = builder()
    _given_up(b)
    s = folded(b)
    closed = applied(s, b.emit(RunCancelled, by="ops.joe", reason="duplicate request"))
    assert (closed.status, closed.cancelled_by, closed.needs_person) == (
        RunStatus.CANCELLED,
        "ops.joe",
        False,
    )


# --- resolve-action ----------------------------------------------------------------------


def _unknown(b: RunBuilder) -> None:
    """The agent intended a call, then stopped without a record: the run needs a person."""
    b.step("collect")
    b.step_index += 1
    b.emit(StepStarted, step="pay", step_index=b.step_index, attempt=1)
    b.emit(ExternalActionIntended, step="pay", idempotency_key="pay-1", system="bank")
    b.emit(
        RunFailed, step="pay", reason=FailureReason.OTHER, message="unknown", needs_attention=True
    )


def test_found_records_the_action_and_the_run_goes_on(builder: BuilderFactory) -> None:
    b = builder()
    _unknown(b)
    s = folded(b)
    assert s.has_unknown_actions
    retry = b.emit(StepRetryRequested, by="ops.joe", step="pay")
    assert rejected(s, retry) == RejectCode.ACTION_UNKNOWN
    event = b.emit(
        ExternalActionResolved, by="ops.joe", idempotency_key="pay-1", found=True, external_id="T9"
    )
    outcome = apply(s, event)
    assert isinstance(outcome, Applied)
    after = outcome.state
    action = after.external_action("pay-1")
    assert action is not None
    assert (action.state, action.external_id) == (ActionState.RECORDED, "T9")
    assert (after.status, after.step_phase, after.has_unknown_actions) == (
        RunStatus.IN_PROGRESS,
        StepPhase.RETRY_SCHEDULED,
        False,
    )
    assert outcome.change.reason == "action pay-1 resolved found as T9 by ops.joe"
    # Settled once: settling it again differently is refused.
    other = b.emit(
        ExternalActionResolved, by="ops.joe", idempotency_key="pay-1", found=True, external_id="X"
    )
    assert rejected(after, other) == RejectCode.ACTION_CONFLICT


def test_not_found_frees_the_key_for_a_new_intent(builder: BuilderFactory) -> None:
    b = builder()
    _unknown(b)
    s = folded(b)
    event = b.emit(ExternalActionResolved, by="ops.joe", idempotency_key="pay-1", found=False)
    after = applied(s, event)
    assert after.external_action("pay-1") is None
    assert after.status is RunStatus.IN_PROGRESS
    started = applied(after, b.emit(StepStarted, step="pay", step_index=1, attempt=2))
    intended = applied(
        started,
        b.emit(ExternalActionIntended, step="pay", idempotency_key="pay-1", system="bank"),
    )
    assert intended.external_action("pay-1") is not None


def test_resolving_an_unknown_key_is_refused(builder: BuilderFactory) -> None:
    b = builder()
    _unknown(b)
    s = folded(b)
    event = b.emit(ExternalActionResolved, by="ops.joe", idempotency_key="nope", found=False)
    assert rejected(s, event) == RejectCode.ACTION_NOT_INTENDED


def test_a_found_action_needs_its_id() -> None:
    with pytest.raises(ValueError, match="external_id"):
        RunBuilder().emit(ExternalActionResolved, by="x", idempotency_key="k", found=True)
