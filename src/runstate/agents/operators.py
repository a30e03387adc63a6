"""Operator commands: cancel a run, retry a failed step, settle an action of unknown outcome.

Each command is one event in the run's history naming who gave it (the authenticated
:class:`~runstate.identity.Principal`). Like a decision (:mod:`runstate.agents.approvals`),
a command reads the run first, at the end of its partition, and checks it with the reducer's
own rules (:func:`runstate.runs.reducer.apply` on the event about to be sent): when the run's
state does not allow it, nothing is sent and :class:`~runstate.errors.IllegalTransition`
says why. After sending, it reads the run at the event's position to confirm the processor
applied it (another command or the agent may have won a race).

Who may: the ``operator`` role (or ``admin``); checked here, and by the query API for
commands that come through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runstate.agents.approvals import data_subject_of
from runstate.agents.client import RunStateReader
from runstate.agents.ports import EventSink
from runstate.errors import ApprovalError, IllegalTransition
from runstate.identity import NotAuthorized, Principal, Role, require_role
from runstate.runs.reducer import Duplicate, RejectCode, Rejected, apply
from runstate.runs.state import RunState
from runstate.schemas.events import (
    AgentEvent,
    ExternalActionResolved,
    RunCancelled,
    StepRetryRequested,
)
from runstate.streams.producer import Delivery

__all__ = ["CommandReceipt", "cancel", "checked_send", "resolve_action", "retry_step"]


@dataclass(frozen=True, slots=True)
class CommandReceipt:
    """A command the processor applied: the event, where it is, and the run after it."""

    run_id: str
    event: AgentEvent
    delivery: Delivery
    state: RunState


def cancel(
    sink: EventSink, reader: RunStateReader, run_id: str, *, by: Principal, reason: str
) -> CommandReceipt:
    """Cancel a run that has not ended (or close a failed one nobody will retry).

    Raises:
        NotAuthorized: ``by`` is not an operator.
        IllegalTransition: the run is unknown or already completed or cancelled.
        QueryError: the run could not be read.
    """
    require_role(by, Role.OPERATOR, doing=f"cancel run {run_id!r}")
    if not reason.strip():
        raise IllegalTransition(f"cancel run {run_id!r}: give a reason (--reason)")
    return checked_send(sink, reader, run_id, RunCancelled, by=by.name, reason=reason)


def retry_step(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    *,
    by: Principal,
    step: str | None = None,
    reason: str | None = None,
) -> CommandReceipt:
    """Give the failed run's step (default: the one it stopped at) one more attempt.

    The run returns to ``in_progress`` at that step; earlier steps keep their outputs and are
    not run again. The agent then runs the step when it is driven again (``attach``).

    Raises:
        NotAuthorized: ``by`` is not an operator.
        IllegalTransition: the run did not fail, ``step`` is not where it stopped, or an
            action of the step has an unknown outcome (settle it first).
        QueryError: the run could not be read.
    """
    require_role(by, Role.OPERATOR, doing=f"retry a step of run {run_id!r}")
    state = _current(reader, run_id, "retry a step of")
    target = step or state.current_step or "?"
    return checked_send(
        sink,
        reader,
        run_id,
        StepRetryRequested,
        state=state,
        by=by.name,
        step=target,
        reason=reason,
    )


def resolve_action(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    idempotency_key: str,
    *,
    by: Principal,
    external_id: str | None,
    reason: str | None = None,
) -> CommandReceipt:
    """Settle an action whose outcome is unknown: ``external_id`` when the external system
    has it (recorded; never called again), None when it has not (the agent may call it).

    A run that failed only because of this outcome goes on at its step.

    Raises:
        NotAuthorized: ``by`` is not an operator.
        IllegalTransition: no such action, or its outcome is already recorded.
        QueryError: the run could not be read.
    """
    require_role(by, Role.OPERATOR, doing=f"resolve an action of run {run_id!r}")
    return checked_send(
        sink,
        reader,
        run_id,
        ExternalActionResolved,
        by=by.name,
        idempotency_key=idempotency_key,
        found=external_id is not None,
        external_id=external_id,
        reason=reason,
    )


def checked_send(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    cls: type[AgentEvent],
    *,
    state: RunState | None = None,
    **fields: Any,
) -> CommandReceipt:
    """Send ``cls(**fields)`` for ``run_id`` if the reducer's rules accept it on the run as
    it is now, then confirm the processor applied it.

    Raises:
        IllegalTransition, ApprovalError, NotAuthorized: the rules refuse it (nothing sent),
            or the processor refused it after all (a race).
        QueryError: the run could not be read.
    """
    doing = f"{cls.event_type} for run {run_id!r}"
    if state is None:
        state = _current(reader, run_id, f"send {cls.event_type} to")
    event = sink.new_event(cls, run_id, **fields, **data_subject_of(state))
    outcome = apply(state, event)
    if isinstance(outcome, Rejected):
        raise _refusal(outcome)
    if isinstance(outcome, Duplicate):
        raise IllegalTransition(
            f"{doing}: nothing to do, the run already reflects it (it is"
            f" {state.status.value}); nothing was sent"
        )
    delivery = sink.emit(event)
    after = reader.read(run_id, after=delivery)
    if after is None or not after.saw_event(event.event_id):
        raise IllegalTransition(
            f"the processor refused {doing} (the run changed in between); check `runstate"
            f" runs show {run_id}` and the dead letters"
        )
    return CommandReceipt(run_id, event, delivery, after)


def _current(reader: RunStateReader, run_id: str, verb: str) -> RunState:
    state = reader.read(run_id, after=reader.latest_position(run_id))
    if state is None:
        raise IllegalTransition(f"cannot {verb} run {run_id!r}: no such run; check the run id")
    return state


def _refusal(outcome: Rejected) -> IllegalTransition | ApprovalError | NotAuthorized:
    if outcome.code is RejectCode.NOT_AUTHORIZED:
        return NotAuthorized(outcome.reason)
    return outcome.as_error()
