"""The pure reducer: ``(state, event) -> outcome``; no Kafka, storage, clock or IO in here.

The live processor, the replay tool and the tests call the same :func:`apply`, so a run
replayed from the log ends in exactly the state the processor kept. Three outcomes:

* :class:`Applied` - the event changed the run; a new state (``version`` + 1) and the
  :class:`~runstate.runs.state.RunStateChanged` to emit.
* :class:`Duplicate` - the event is already reflected: its offset or id was seen, or it
  restates a fact the state holds (redelivered with a new id, an expiry that lost the race
  to a decision). The state is returned unchanged.
* :class:`Rejected` - the event is not legal in the run's state; the state is unchanged and
  the ``code`` says what kind of mistake it was (see :class:`RejectCode`).

Decisions worth knowing:

* Status moves follow :data:`~runstate.runs.state.TRANSITIONS` only; step, approval
  and action guards add detail.
* ``ApprovalGranted``/``ApprovalRejected``/``ApprovalExpired`` all return the run to
  ``in_progress`` with the outcome in ``state.approval``: the agent's own handler decides
  what a rejection or an expiry means (revise, cancel, fail). Only it knows.
* An expiry for an approval that is no longer pending, or for an older request (other
  ``subject_hash`` or ``due_at``), is a :class:`Duplicate` (:attr:`DuplicateWhy.SUPERSEDED`):
  a timer racing a decision must never flip the run.
* After the run ended, only ``ModelCalled`` and ``ExternalActionRecorded`` are applied:
  they record facts that already happened (late audit lines, an operator reconciling an
  action), and dropping them would lose the very ids that prevent a second charge.
* ``ExternalActionRecorded`` needs its ``ExternalActionIntended``: a call with no intent on
  record means a crash between call and record could not have been detected.
* A step is identified by ``(step, step_index)``; a new step needs a higher ``step_index``
  and attempt 1, a re-attempt needs ``attempt + 1``. ``RetryScheduled`` needs a failed step.
* The run lease: a ``RunClaimed`` of the next epoch makes its writer the run's only driver;
  an event of an older epoch is :class:`Rejected` with :attr:`RejectCode.FENCED` and the
  reason ``fenced: run claimed by <holder> (epoch N)``; events without an epoch (people,
  timers, runs from before the lease) are applied as before. The rules, expiry included,
  are in :mod:`runstate.runs._lease`.
* Limits of deduplication: a rejected event leaves no trace (the state does not change),
  so a copy of it written again after the run moved on is judged afresh; and with no
  offsets, a copy older than the last 128 applied ids is caught only by the rules' own
  "already reflected" checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeAlias

from runstate.runs._lease import claimed, fenced, renewed
from runstate.runs._operator import (
    OPERATOR_EVENTS,
    decided,
    decider_refused,
    dispatch_operator,
)
from runstate.runs._rules import DuplicateWhy, NoOp, RejectCode, Rejected, Result, dispatch
from runstate.runs.state import (
    RECENT_EVENT_IDS_LIMIT,
    TRANSITIONS,
    ApprovalOutcome,
    RunState,
    RunStateChanged,
    RunStatus,
    event_digest,
)
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ExternalActionResolved,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunClaimed,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetryRequested,
    StepStarted,
)

__all__ = [
    "TRANSITIONS",
    "Applied",
    "Duplicate",
    "DuplicateWhy",
    "Outcome",
    "RejectCode",
    "Rejected",
    "apply",
    "decider_refused",
    "fold",
    "is_overdue",
]


@dataclass(frozen=True, slots=True)
class Applied:
    """The event changed the run: store ``state``, emit ``change``."""

    state: RunState
    change: RunStateChanged


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Nothing to do: the event is already reflected in ``state`` (returned unchanged)."""

    state: RunState
    why: DuplicateWhy


Outcome: TypeAlias = Applied | Duplicate | Rejected


def apply(state: RunState | None, event: AgentEvent, *, offset: int | None = None) -> Outcome:
    """Apply one event to a run's state.

    Args:
        state: the run's current state, or None if nothing was applied yet.
        event: the event, already decoded and validated.
        offset: the event's offset in its source partition, if known. Offsets at or below
            ``state.last_offset`` are duplicates (redelivery after a restart or rebalance).

    Returns:
        :class:`Applied`, :class:`Duplicate` or :class:`Rejected`; never raises for a bad event.
    """
    if state is None:
        if isinstance(event, RunStarted):
            return _applied(None, _started(event), event, offset, event_digest(event.event_id))
        return Rejected(
            f"{event.event_type} {event.event_id!r} for run {event.run_id!r} came before its"
            " RunStarted; emit RunStarted first",
            RejectCode.RUN_NOT_STARTED,
        )
    if event.run_id != state.run_id:
        return Rejected(
            f"event {event.event_id!r} is for run {event.run_id!r}, not {state.run_id!r};"
            " key events by run_id",
            RejectCode.WRONG_RUN,
        )
    if offset is not None and state.last_offset is not None and offset <= state.last_offset:
        return Duplicate(state, DuplicateWhy.OFFSET_SEEN)
    digest = event_digest(event.event_id)
    if digest in state.recent_event_digests:
        return Duplicate(state, DuplicateWhy.EVENT_ID_SEEN)
    if isinstance(event, RunStarted):
        return _restarted(state, event)
    result: Result
    if isinstance(event, RunClaimed):
        result = claimed(state, event)
    else:
        refused = fenced(state, event)
        if refused is not None:
            return refused
        if isinstance(event, OPERATOR_EVENTS):
            result = dispatch_operator(state, event)
        elif isinstance(event, ApprovalGranted | ApprovalRejected):
            result = decided(state, event)
        else:
            result = dispatch(state, event)
        if isinstance(result, RunState):
            result = renewed(result, event)
    if isinstance(result, RunState):
        return _applied(state, result, event, offset, digest)
    if isinstance(result, NoOp):
        return Duplicate(state, result.value)
    return result


def fold(
    events: Iterable[AgentEvent | tuple[int, AgentEvent]],
    *,
    start: RunState | None = None,
    until: datetime | int | None = None,
) -> RunState | None:
    """Replay events in log order and return the resulting state (None if none applied).

    Duplicates and rejected events are skipped, exactly as the live processor skips them.

    Args:
        events: events, or ``(offset, event)`` pairs to deduplicate by offset as well.
        start: a snapshot to continue from (snapshot + log tail), or None for a fresh run.
        until: stop before the first event past this point: a datetime compares with
            ``occurred_at`` (log order wins; the fold stops, it does not skip), an int with
            the event's offset when pairs are given, else with its 0-based position.
    """
    state = start
    for position, item in enumerate(events):
        offset: int | None
        if isinstance(item, tuple):
            offset, event = item
            position = offset
        else:
            offset, event = None, item
        if until is not None:
            if isinstance(until, datetime):
                if event.occurred_at > until:
                    break
            elif position > until:
                break
        outcome = apply(state, event, offset=offset)
        if isinstance(outcome, Applied):
            state = outcome.state
    return state


def is_overdue(state: RunState | None, now: datetime) -> bool:
    """Whether the run waits on an approval whose due time has come (``now >= due_at``)."""
    if state is None or state.status is not RunStatus.WAITING_APPROVAL:
        return False
    approval = state.approval
    return (
        approval is not None
        and approval.outcome is ApprovalOutcome.PENDING
        and (now >= approval.due_at)
    )


#: Events with a ``step`` field (isinstance is much cheaper than a missed pydantic getattr).
_NAMES_A_STEP = (
    StepStarted,
    StepCompleted,
    StepFailed,
    RetryScheduled,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ModelCalled,
    RunFailed,
    StepRetryRequested,
)


def _applied(
    before: RunState | None, after: RunState, event: AgentEvent, offset: int | None, digest: int
) -> Applied:
    """Add the bookkeeping every applied event shares and build the change record."""
    if before is None:
        recent: tuple[int, ...] = (digest,)
        version, updated_at = 1, event.occurred_at
    else:
        version = before.version + 1
        # Producers' clocks differ; updated_at never moves back so "stuck since" stays true.
        updated_at = max(before.updated_at, event.occurred_at)
        recent = (*before.recent_event_digests[1 - RECENT_EVENT_IDS_LIMIT :], digest)
    state = replace(
        after,
        version=version,
        updated_at=updated_at,
        last_offset=after.last_offset if offset is None else offset,
        recent_event_digests=recent,
    )
    approval = state.approval
    step = event.step if isinstance(event, _NAMES_A_STEP) else None
    reason: str | None = None
    if isinstance(event, StepFailed | RunFailed):
        reason = event.reason.value
    elif isinstance(event, RunCancelled):
        reason = event.reason
    elif isinstance(event, ApprovalGranted | ApprovalRejected):
        if approval is not None and approval.override_reason is not None:
            reason = f"admin override by {event.by}: {approval.override_reason}"
    elif isinstance(event, OPERATOR_EVENTS):
        reason = _operator_line(event)
    change = RunStateChanged(
        run_id=state.run_id,
        version=version,
        event_id=event.event_id,
        event_type=event.event_type,
        occurred_at=event.occurred_at,
        from_status=None if before is None else before.status,
        to_status=state.status,
        step=step or state.current_step,
        reason=reason,
        approval_outcome=None if approval is None else approval.outcome,
        approver=None if approval is None else approval.approver,
        approval_due_at=None if approval is None else approval.due_at,
        decided_by=None if approval is None else approval.decided_by,
        needs_attention=state.needs_attention,
        epoch=state.epoch,
        holder=state.holder,
    )
    return Applied(state, change)


def _started(e: RunStarted) -> RunState:
    return RunState(
        run_id=e.run_id,
        status=RunStatus.CREATED,
        agent=e.agent,
        owner=e.owner,
        input=e.input,
        prompt_version=e.prompt_version,
        source=e.source,
        tenant=e.tenant,
        created_at=e.occurred_at,
        updated_at=e.occurred_at,
        version=0,
    )


def _restarted(s: RunState, e: RunStarted) -> Duplicate | Rejected:
    """A second RunStarted: the same start redelivered (after its id was forgotten) or not."""
    if (e.occurred_at, e.agent, e.input, e.owner) == (s.created_at, s.agent, s.input, s.owner):
        return Duplicate(s, DuplicateWhy.ALREADY_REFLECTED)
    return Rejected(
        f"run {s.run_id!r} was already started at {s.created_at.isoformat()}; start a new run"
        " with a new run_id",
        RejectCode.RUN_ALREADY_STARTED,
    )


def _operator_line(event: StepRetryRequested | ExternalActionResolved) -> str:
    """The change line's reason for an operator's command: who did what, and why."""
    why = f": {event.reason}" if event.reason else ""
    if isinstance(event, StepRetryRequested):
        return f"retry requested by {event.by}{why}"
    outcome = f"found as {event.external_id}" if event.found else "not found"
    return f"action {event.idempotency_key} resolved {outcome} by {event.by}{why}"
