"""The rules for what people do to a run: who may decide an approval, and the operator
commands that un-stick a failed run.

Private: :func:`runstate.runs.reducer.apply` routes :data:`OPERATOR_EVENTS` and decisions
here (:func:`decided` checks the decider, then applies the rule of :mod:`~runstate.runs._rules`).

Trust model (docs/operators.md has it in full): the processor cannot know who wrote a record,
only what it says. A decision names its decider (``by``) with the groups and roles that the
authenticating side (the query API, the CLI, the SDK, each reading the identity directory)
asserted for them. The rule here refuses a decision whose own claims do not allow it: someone
other than the requested approver, not in the requested group, or an admin without a reason.
So a mistake or a producer that writes its own name is stopped and dead-lettered; a producer
that forges an allowed name is not: keep write access to the events topic to agents and the
decision API (Kafka ACLs).
"""

from __future__ import annotations

from dataclasses import replace

from runstate.runs._rules import NoOp, RejectCode, Rejected, Result, dispatch, to_status
from runstate.runs.state import (
    ActionState,
    Approval,
    ApprovalOutcome,
    RunState,
    RunStatus,
    StepPhase,
)
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ApprovalRejected,
    ApproverKind,
    ExternalActionResolved,
    StepRetryRequested,
)

__all__ = [
    "ADMIN_ROLE",
    "OPERATOR_EVENTS",
    "allowed_decider",
    "decided",
    "decider_refused",
    "dispatch_operator",
]

#: The role that may decide any approval, with a reason (``override_reason``).
ADMIN_ROLE = "admin"

#: Events of operators, judged by the rules of this module.
OPERATOR_EVENTS = (StepRetryRequested, ExternalActionResolved)


def decided(s: RunState, e: ApprovalGranted | ApprovalRejected) -> Result:
    """A decision: refused when its decider may not decide the pending approval, else the
    approval rule; an admin's override keeps its reason in the approval."""
    a = s.approval
    pending = a is not None and a.outcome is ApprovalOutcome.PENDING and not s.is_terminal
    if a is not None and pending and a.subject_hash == e.subject_hash:
        refused = decider_refused(s, a, e)
        if refused is not None:
            return refused
    result = dispatch(s, e)
    if (
        isinstance(result, RunState)
        and result.approval is not None
        and not allowed_decider(result.approval, e.by, e.by_groups)
        and result.approval.enforce_decider
    ):
        return replace(result, approval=replace(result.approval, override_reason=e.override_reason))
    return result


def decider_refused(
    s: RunState, a: Approval, e: ApprovalGranted | ApprovalRejected
) -> Rejected | None:
    """Why ``e``'s decider may not decide ``a`` (None when they may).

    Allowed: the requested user, a member of the requested group (by the decision's
    ``by_groups``), or anyone with the admin role who gives an ``override_reason``.
    """
    if not a.enforce_decider or allowed_decider(a, e.by, e.by_groups):
        return None
    if ADMIN_ROLE in e.by_roles and (e.override_reason or "").strip():
        return None
    whom = (
        f"user {a.approver!r}"
        if a.approver_kind is ApproverKind.USER
        else f"a member of group {a.approver!r}"
    )
    admin = (
        "; as an admin, give an override reason to decide it anyway"
        if ADMIN_ROLE in e.by_roles
        else ""
    )
    return Rejected(
        f"{e.event_type} by {e.by!r} for run {s.run_id!r}: the approval is for {whom}, and"
        f" {e.by!r} is not (groups: {', '.join(e.by_groups) or 'none'}); ask {whom} to decide"
        f"{admin}",
        RejectCode.NOT_AUTHORIZED,
    )


def allowed_decider(a: Approval, by: str, groups: tuple[str, ...]) -> bool:
    """Whether ``by`` (in ``groups``) is whom the approval asks, without any override."""
    if a.approver_kind is ApproverKind.USER:
        return by == a.approver
    return a.approver in groups


def dispatch_operator(s: RunState, event: AgentEvent) -> Result:
    """The rule for one operator event against an existing state."""
    if isinstance(event, StepRetryRequested):
        return _retry_requested(s, event)
    if isinstance(event, ExternalActionResolved):
        return _action_resolved(s, event)
    return Rejected(f"unknown operator event {event.event_type}", RejectCode.ILLEGAL_TRANSITION)


def _retry_requested(s: RunState, e: StepRetryRequested) -> Result:
    where = f"retry of step {e.step!r} of run {s.run_id!r}"
    to = to_status(s, e)
    if isinstance(to, Rejected) or s.status is not RunStatus.FAILED:
        return Rejected(
            f"{where} by {e.by!r}: the run is {s.status.value}; only a failed run's step can be"
            " retried (a live run's agent retries by its own policy)",
            RejectCode.RUN_NOT_FAILED,
        )
    if s.current_step is None:
        return Rejected(
            f"{where} by {e.by!r}: the run failed before any step started; start a new run",
            RejectCode.STEP_NOT_RETRYABLE,
        )
    if e.step != s.current_step:
        return Rejected(
            f"{where} by {e.by!r}: the run stopped at step {s.current_step!r}; only that step"
            " can be retried (earlier steps keep their outputs)",
            RejectCode.STEP_NOT_RETRYABLE,
        )
    if s.step_phase is StepPhase.COMPLETED:
        return Rejected(
            f"{where} by {e.by!r}: the step completed and the run failed after it; there is"
            " nothing to retry (start a new run)",
            RejectCode.STEP_NOT_RETRYABLE,
        )
    unknown = [a for a in s.external_actions if a.state is ActionState.INTENDED]
    if unknown:
        keys = ", ".join(f"{a.idempotency_key!r} ({a.system})" for a in unknown)
        return Rejected(
            f"{where} by {e.by!r}: the outcome of action {keys} is unknown; check the system"
            f" and settle it first: runstate resolve-action {s.run_id}"
            f" {unknown[0].idempotency_key} --found ID | --not-found",
            RejectCode.ACTION_UNKNOWN,
        )
    return _resumed(s, to)


def _resumed(s: RunState, to: RunStatus) -> RunState:
    """The run back in progress at its step, whose next attempt may start at once."""
    return replace(
        s,
        status=to,
        step_phase=StepPhase.RETRY_SCHEDULED,
        retry_count=s.retry_count + 1,
        retry_not_before=None,
        needs_attention=False,
    )


def _action_resolved(s: RunState, e: ExternalActionResolved) -> Result:
    key = e.idempotency_key
    a = s.external_action(key)
    recorded = a is not None and a.state is ActionState.RECORDED
    if e.found and recorded and a is not None and a.external_id == e.external_id:
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    if a is None:
        return Rejected(
            f"resolve {key!r} of run {s.run_id!r} by {e.by!r}: the run has no action with"
            " this key (see `runstate runs list --unknown-actions`)",
            RejectCode.ACTION_NOT_INTENDED,
        )
    if a.state is ActionState.RECORDED:
        return Rejected(
            f"resolve {key!r} of run {s.run_id!r} by {e.by!r}: the action is already recorded"
            f" as {a.system!r}/{a.external_id!r}; its outcome is known",
            RejectCode.ACTION_CONFLICT,
        )
    if e.found:
        done = replace(
            a, state=ActionState.RECORDED, external_id=e.external_id, recorded_at=e.occurred_at
        )
        actions = tuple(done if x is a else x for x in s.external_actions)
    else:
        # Not found: the intent goes, so the agent writes a new one and calls the system.
        actions = tuple(x for x in s.external_actions if x is not a)
    settled = replace(s, status=to, external_actions=actions)
    stopped_for_it = s.status is RunStatus.FAILED and s.needs_attention
    if (
        stopped_for_it
        and s.current_step is not None
        and s.step_phase is not StepPhase.COMPLETED
        and not settled.has_unknown_actions
    ):
        # The run failed only because this outcome was unknown: it goes on at its step.
        return _resumed(settled, RunStatus.IN_PROGRESS)
    return settled
