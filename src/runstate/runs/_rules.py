"""The per-event rules behind :func:`runstate.runs.reducer.apply`.

Private: import the names from :mod:`runstate.runs.reducer`. Each rule gets a state
and one event type and answers with the next state (status from
:data:`~runstate.runs.state.TRANSITIONS`), a :class:`NoOp` or a :class:`Rejected`.
Each first checks whether the event restates what the state already holds, so an event
redelivered with a new id, or long after the state forgot its id, is recognised as a
duplicate instead of being rejected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TypeAlias

from runstate.errors import ApprovalError, IllegalTransition
from runstate.runs.state import (
    TRANSITIONS,
    ActionState,
    Approval,
    ApprovalOutcome,
    CompletedStep,
    ExternalAction,
    ModelCall,
    RunState,
    RunStatus,
    StepPhase,
    append_model_call,
)
from runstate.schemas.events import (
    AgentEvent,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepStarted,
)

__all__ = ["DuplicateWhy", "NoOp", "RejectCode", "Rejected", "Result", "dispatch", "to_status"]


class RejectCode(enum.StrEnum):
    """Why an event was rejected; stable strings for metrics and dead-letter records."""

    RUN_NOT_STARTED = "run_not_started"
    RUN_ALREADY_STARTED = "run_already_started"
    WRONG_RUN = "wrong_run"
    RUN_ENDED = "run_ended"
    ILLEGAL_TRANSITION = "illegal_transition"
    STEP_NOT_STARTED = "step_not_started"
    STEP_NOT_RUNNING = "step_not_running"
    STEP_IN_PROGRESS = "step_in_progress"
    STEP_OUT_OF_ORDER = "step_out_of_order"
    STEP_ALREADY_COMPLETED = "step_already_completed"
    WRONG_ATTEMPT = "wrong_attempt"
    STEP_NOT_FAILED = "step_not_failed"
    NO_PENDING_APPROVAL = "no_pending_approval"
    STALE_SUBJECT = "stale_subject"
    PREMATURE_EXPIRY = "premature_expiry"
    ACTION_NOT_INTENDED = "action_not_intended"
    ACTION_CONFLICT = "action_conflict"
    #: Written under an older epoch of the run lease: another process claimed the run since.
    FENCED = "fenced"
    #: Written under an epoch no claim started (the writer skipped RunClaimed).
    UNCLAIMED_EPOCH = "unclaimed_epoch"
    #: A decision by someone the approval is not for (and no admin override with a reason).
    NOT_AUTHORIZED = "not_authorized"
    #: An operator's retry of a run that did not fail.
    RUN_NOT_FAILED = "run_not_failed"
    #: An operator's retry of a step that is not the failed run's current, unfinished step.
    STEP_NOT_RETRYABLE = "step_not_retryable"
    #: A retry while an action's outcome is unknown (settle it with resolve-action first).
    ACTION_UNKNOWN = "action_unknown"


_APPROVAL_CODES = frozenset(
    {
        RejectCode.NO_PENDING_APPROVAL,
        RejectCode.STALE_SUBJECT,
        RejectCode.PREMATURE_EXPIRY,
        RejectCode.NOT_AUTHORIZED,
    }
)


class DuplicateWhy(enum.StrEnum):
    """How a duplicate was recognised."""

    OFFSET_SEEN = "offset_seen"
    EVENT_ID_SEEN = "event_id_seen"
    ALREADY_REFLECTED = "already_reflected"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class Rejected:
    """The event is illegal here; ``reason`` says what to do about it."""

    reason: str
    code: RejectCode

    def as_error(self) -> IllegalTransition | ApprovalError:
        """The runstate error to raise for this rejection (approval API, SDK guards)."""
        if self.code in _APPROVAL_CODES:
            return ApprovalError(self.reason)
        return IllegalTransition(self.reason)


class NoOp(enum.Enum):
    """A rule's answer for "already reflected"; :func:`apply` turns it into a Duplicate."""

    REFLECTED = DuplicateWhy.ALREADY_REFLECTED
    SUPERSEDED = DuplicateWhy.SUPERSEDED


Result: TypeAlias = RunState | NoOp | Rejected


def dispatch(s: RunState, event: AgentEvent) -> Result:
    """The rule for one event (any but ``RunStarted``) against an existing state."""
    match event:
        case StepStarted():
            return _step_started(s, event)
        case StepCompleted():
            return _step_completed(s, event)
        case StepFailed():
            return _step_failed(s, event)
        case RetryScheduled():
            return _retry_scheduled(s, event)
        case ApprovalRequested():
            return _approval_requested(s, event)
        case ApprovalGranted() | ApprovalRejected():
            return _approval_decided(s, event)
        case ApprovalExpired():
            return _approval_expired(s, event)
        case ExternalActionIntended():
            return _action_intended(s, event)
        case ExternalActionRecorded():
            return _action_recorded(s, event)
        case ModelCalled():
            return _model_called(s, event)
        case RunCompleted() | RunFailed() | RunCancelled():
            return _run_ended(s, event)
    return Rejected(f"unknown event type {type(event).__name__}", RejectCode.ILLEGAL_TRANSITION)


def to_status(s: RunState, e: AgentEvent) -> RunStatus | Rejected:
    """The status :data:`TRANSITIONS` moves the run to, or why there is none."""
    to: RunStatus | None = TRANSITIONS[type(e)].get(s.status)
    if to is not None:
        return to
    if s.is_terminal:
        return Rejected(
            f"run {s.run_id!r} is already {s.status}; {e.event_type} is not accepted after a"
            " run ended (start a new run to continue the work)",
            RejectCode.RUN_ENDED,
        )
    hint = (
        "; decide or expire the pending approval first"
        if s.status is RunStatus.WAITING_APPROVAL
        else ""
    )
    return Rejected(
        f"{e.event_type} is not allowed while run {s.run_id!r} is {s.status}{hint}",
        RejectCode.ILLEGAL_TRANSITION,
    )


def _step_started(s: RunState, e: StepStarted) -> Result:
    same_step = e.step == s.current_step and e.step_index == s.step_index
    if same_step and e.attempt == s.step_attempt:
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    where = f"step {e.step!r} (index {e.step_index}) of run {s.run_id!r}"
    if same_step:
        if s.step_phase is StepPhase.COMPLETED:
            return Rejected(
                f"{where} already completed; start the next step with a higher step_index",
                RejectCode.STEP_ALREADY_COMPLETED,
            )
        if e.attempt != s.step_attempt + 1:
            return Rejected(
                f"{where}: attempt {e.attempt} started, expected {s.step_attempt + 1}",
                RejectCode.WRONG_ATTEMPT,
            )
    else:
        if s.step_phase is StepPhase.RUNNING:
            return Rejected(
                f"{where} started while step {s.current_step!r} is still running;"
                " complete or fail it first",
                RejectCode.STEP_IN_PROGRESS,
            )
        if s.step_index is not None and e.step_index <= s.step_index:
            return Rejected(
                f"{where} started after step index {s.step_index}; step_index must grow",
                RejectCode.STEP_OUT_OF_ORDER,
            )
        if e.attempt != 1:
            return Rejected(
                f"{where} is new, so its first attempt is 1, not {e.attempt}",
                RejectCode.WRONG_ATTEMPT,
            )
    return replace(
        s,
        status=to,
        current_step=e.step,
        step_index=e.step_index,
        step_attempt=e.attempt,
        step_phase=StepPhase.RUNNING,
        last_attempt_at=e.occurred_at,
        retry_not_before=None,
    )


def _check_running(s: RunState, e: StepCompleted | StepFailed) -> Rejected | None:
    if e.step != s.current_step or s.step_phase is None:
        return Rejected(
            f"{e.event_type} for step {e.step!r} of run {s.run_id!r}, but the current step is"
            f" {s.current_step!r}; emit StepStarted first",
            RejectCode.STEP_NOT_STARTED,
        )
    if e.attempt != s.step_attempt:
        return Rejected(
            f"{e.event_type} for attempt {e.attempt} of step {e.step!r}, but attempt"
            f" {s.step_attempt} is current",
            RejectCode.WRONG_ATTEMPT,
        )
    if s.step_phase is not StepPhase.RUNNING:
        return Rejected(
            f"{e.event_type}: attempt {e.attempt} of step {e.step!r} is already {s.step_phase}",
            RejectCode.STEP_NOT_RUNNING,
        )
    return None


def _step_completed(s: RunState, e: StepCompleted) -> Result:
    if (e.step, e.attempt, StepPhase.COMPLETED) == (s.current_step, s.step_attempt, s.step_phase):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    bad = _check_running(s, e)
    if bad is not None:
        return bad
    done = CompletedStep(
        step=e.step,
        step_index=s.step_index or 0,  # set whenever a step is current
        attempt=e.attempt,
        completed_at=e.occurred_at,
        output_ref=e.output_ref,
    )
    return replace(
        s,
        status=to,
        step_phase=StepPhase.COMPLETED,
        completed_steps=(*s.completed_steps, done),
    )


def _step_failed(s: RunState, e: StepFailed) -> Result:
    failed = s.step_phase in (StepPhase.FAILED, StepPhase.RETRY_SCHEDULED)
    if failed and (e.step, e.attempt) == (s.current_step, s.step_attempt):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    bad = _check_running(s, e)
    if bad is not None:
        return bad
    return replace(
        s,
        status=to,
        step_phase=StepPhase.FAILED,
        last_error_reason=e.reason,
        last_error_message=e.message,
    )


def _retry_scheduled(s: RunState, e: RetryScheduled) -> Result:
    scheduled = s.step_phase is StepPhase.RETRY_SCHEDULED and e.attempt == s.step_attempt + 1
    if e.step == s.current_step and (scheduled or e.attempt == s.step_attempt):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    if e.step != s.current_step or s.step_phase is not StepPhase.FAILED:
        return Rejected(
            f"RetryScheduled for step {e.step!r} of run {s.run_id!r}, but that step has not"
            f" failed (current {s.current_step!r} is {s.step_phase}); emit StepFailed first",
            RejectCode.STEP_NOT_FAILED,
        )
    if e.attempt != s.step_attempt + 1:
        return Rejected(
            f"RetryScheduled for attempt {e.attempt}; the next attempt is {s.step_attempt + 1}",
            RejectCode.WRONG_ATTEMPT,
        )
    return replace(
        s,
        status=to,
        step_phase=StepPhase.RETRY_SCHEDULED,
        retry_count=s.retry_count + 1,
        retry_not_before=e.not_before,
    )


def _approval_requested(s: RunState, e: ApprovalRequested) -> Result:
    a = s.approval
    if a is not None and (a.subject_hash, a.requested_at, a.step) == (
        e.subject_hash,
        e.occurred_at,
        e.step,
    ):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    approval = Approval(
        step=e.step,
        approver=e.approver,
        approver_kind=e.approver_kind,
        subject_hash=e.subject_hash,
        subject=e.subject,
        requested_at=e.occurred_at,
        due_at=e.due_at,
        enforce_decider=e.enforce_decider,
    )
    return replace(s, status=to, approval=approval)


def _approval_decided(s: RunState, e: ApprovalGranted | ApprovalRejected) -> Result:
    granted = isinstance(e, ApprovalGranted)
    outcome = ApprovalOutcome.GRANTED if granted else ApprovalOutcome.REJECTED
    a = s.approval
    if a is not None and (a.outcome, a.subject_hash, a.decided_by) == (
        outcome,
        e.subject_hash,
        e.by,
    ):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected) and s.is_terminal:
        return to
    if a is None or a.outcome is not ApprovalOutcome.PENDING or isinstance(to, Rejected):
        already = "no approval was requested" if a is None else f"the approval was {a.outcome}"
        return Rejected(
            f"{e.event_type} by {e.by!r} for run {s.run_id!r}: {already}; nothing to decide",
            RejectCode.NO_PENDING_APPROVAL,
        )
    if e.subject_hash != a.subject_hash:
        return Rejected(
            f"{e.event_type} by {e.by!r} for run {s.run_id!r} names a stale subject: it"
            " changed since it was shown; show the current subject and decide again",
            RejectCode.STALE_SUBJECT,
        )
    decided = replace(
        a, outcome=outcome, decided_by=e.by, decided_at=e.occurred_at, comment=e.comment
    )
    return replace(s, status=to, approval=decided)


def _approval_expired(s: RunState, e: ApprovalExpired) -> Result:
    a = s.approval
    if a is None:
        return Rejected(
            f"ApprovalExpired for run {s.run_id!r}, which never requested an approval;"
            " check the expiry timer's run_id",
            RejectCode.NO_PENDING_APPROVAL,
        )
    pending = a.outcome is ApprovalOutcome.PENDING and not s.is_terminal
    if not pending or (a.subject_hash, a.due_at) != (e.subject_hash, e.due_at):
        # A timer that lost the race to a decision, or fired for an older request.
        return NoOp.SUPERSEDED
    if e.occurred_at < a.due_at:
        return Rejected(
            f"ApprovalExpired for run {s.run_id!r} at {e.occurred_at.isoformat()}, before the"
            f" approval is due ({a.due_at.isoformat()}); check the expiry timer's clock",
            RejectCode.PREMATURE_EXPIRY,
        )
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    expired = replace(a, outcome=ApprovalOutcome.EXPIRED, decided_at=e.occurred_at)
    return replace(s, status=to, approval=expired)


def _action_intended(s: RunState, e: ExternalActionIntended) -> Result:
    a = s.external_action(e.idempotency_key)
    if a is not None and (a.system, a.step) == (e.system, e.step):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    if a is not None:
        return Rejected(
            f"idempotency key {e.idempotency_key!r} of run {s.run_id!r} already belongs to"
            f" {a.system!r} in step {a.step!r}; make keys unique per action",
            RejectCode.ACTION_CONFLICT,
        )
    action = ExternalAction(
        idempotency_key=e.idempotency_key,
        system=e.system,
        step=e.step,
        state=ActionState.INTENDED,
        intended_at=e.occurred_at,
    )
    return replace(s, status=to, external_actions=(*s.external_actions, action))


def _action_recorded(s: RunState, e: ExternalActionRecorded) -> Result:
    a = s.external_action(e.idempotency_key)
    if a is not None and a.state is ActionState.RECORDED and a.external_id == e.external_id:
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    if a is None:
        return Rejected(
            f"ExternalActionRecorded for key {e.idempotency_key!r} of run {s.run_id!r} has no"
            " ExternalActionIntended; emit the intent before calling the system",
            RejectCode.ACTION_NOT_INTENDED,
        )
    if (a.system, a.step) != (e.system, e.step) or a.state is ActionState.RECORDED:
        return Rejected(
            f"key {e.idempotency_key!r} of run {s.run_id!r} is already {a.state} as"
            f" {a.system!r}/{a.external_id!r} in step {a.step!r}; the action may have run"
            " twice: a person must check the external system",
            RejectCode.ACTION_CONFLICT,
        )
    done = replace(
        a,
        state=ActionState.RECORDED,
        external_id=e.external_id,
        output_ref=e.output_ref,
        recorded_at=e.occurred_at,
    )
    actions = tuple(done if x is a else x for x in s.external_actions)
    return replace(s, status=to, external_actions=actions)


def _model_called(s: RunState, e: ModelCalled) -> Result:
    if s.has_model_request(e.model_request_id):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    call = ModelCall(request_id=e.model_request_id, model=e.model, step=e.step)
    return replace(s, status=to, model_calls=append_model_call(s.model_calls, call))


def _run_ended(s: RunState, e: RunCompleted | RunFailed | RunCancelled) -> Result:
    to = to_status(s, e)
    if isinstance(to, Rejected):
        # The same ending again (RunFailed on a failed run) is a restatement, not an error.
        same_end = s.status is TRANSITIONS[type(e)][RunStatus.IN_PROGRESS]
        return NoOp.REFLECTED if same_end else to
    match e:
        case RunCompleted():
            return replace(s, status=to, output_ref=e.output_ref)
        case RunFailed():
            return replace(
                s,
                status=to,
                last_error_reason=e.reason,
                last_error_message=e.message,
                needs_attention=s.needs_attention or e.needs_attention,
            )
        case RunCancelled():
            return replace(
                s, status=to, cancelled_by=e.by, cancel_reason=e.reason, needs_attention=False
            )
