"""The run state: what one agent run knows, has done, and should do next.

A :class:`RunState` is the snapshot the processor keeps per ``run_id`` and the value the
reducer (:mod:`runstate.runs.reducer`) folds events into. It is a frozen dataclass,
not a pydantic model: the reducer builds one per event in the hot path and every field it
sets comes from an already validated event, so validating again would only cost time.
Collections are tuples so that a state is a value (equal by content, safe to share).

Growth: ``completed_steps``, ``external_actions`` and ``model_calls`` keep every entry of the
run, because they answer audit questions ("which model request produced this?", "was the
email already sent?") and resuming needs earlier steps' outputs. They grow with the run
(roughly 40-120 bytes per entry encoded), so nothing per event handles them whole: the store
keeps one entry per item (:mod:`runstate.runs.layout`), the latest-state topic only their
counts (:mod:`runstate.runs.summary`), and the reducer checks a model request id against a
set (:func:`append_model_call`). The deduplication memory is bounded: the last
:data:`RECENT_EVENT_IDS_LIMIT` applied event ids, kept as 8-byte digests
(:func:`event_digest`) so it costs 1 KiB per record instead of about 4.7 KiB of UUID text.
"""

from __future__ import annotations

import enum
import hashlib
import operator
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from runstate.schemas.events import (
    AgentEvent,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    ExternalActionRecorded,
    ExternalActionResolved,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunClaimed,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepRetryRequested,
    StepStarted,
)

__all__ = [
    "RECENT_EVENT_IDS_LIMIT",
    "STATE_SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "TRANSITIONS",
    "ActionState",
    "Approval",
    "ApprovalOutcome",
    "CompletedStep",
    "ExternalAction",
    "ModelCall",
    "RunState",
    "RunStateChanged",
    "RunStatus",
    "StepPhase",
    "append_model_call",
    "event_digest",
    "model_calls_contain",
]

#: Version of the state record layout (``RunState.vN.avsc``); stored in every record.
#: v2 added the run lease (``epoch``, ``holder``, ``lease_ms``, ``lease_until``); v3 the
#: approval's ``enforce_decider`` and ``override_reason``.
STATE_SCHEMA_VERSION = 3

#: How many applied event ids a state remembers for deduplication. Duplicates older than
#: this are still caught by the source offset and by the reducer's semantic checks.
RECENT_EVENT_IDS_LIMIT = 128


def event_digest(event_id: str) -> int:
    """The 64-bit digest a state remembers an event id by.

    Two distinct ids share a digest with probability 2**-64, so the chance of wrongly
    dropping an event as a duplicate of one of 128 remembered ids is about 7e-18.
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class RunStatus(enum.StrEnum):
    """Where the run is; kept to the article's short list so screens and people agree."""

    CREATED = "created"
    IN_PROGRESS = "in_progress"
    WAITING_APPROVAL = "waiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses a run has ended in: only an operator brings a failed run back
#: (:class:`~runstate.schemas.events.StepRetryRequested`) or closes it (``RunCancelled``).
TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


_C, _P, _W = RunStatus.CREATED, RunStatus.IN_PROGRESS, RunStatus.WAITING_APPROVAL
_D, _F, _X = RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED

#: Event type -> {status before: status after}. A status missing from a row makes the event
#: illegal in that status. ``RunStarted`` is legal only when there is no state: None -> created.
# fmt: off
TRANSITIONS: Final[Mapping[type[AgentEvent], Mapping[RunStatus, RunStatus]]] = {
    RunClaimed:             {_C: _C, _P: _P, _W: _W},
    StepStarted:            {_C: _P, _P: _P},
    StepCompleted:          {_P: _P},
    StepFailed:             {_P: _P},
    RetryScheduled:         {_P: _P},
    ApprovalRequested:      {_C: _W, _P: _W},
    ApprovalGranted:        {_W: _P},
    ApprovalRejected:       {_W: _P},
    ApprovalExpired:        {_W: _P},
    ExternalActionIntended: {_P: _P},
    ExternalActionRecorded: {_P: _P, _W: _W, _D: _D, _F: _F, _X: _X},
    ModelCalled:            {_C: _C, _P: _P, _W: _W, _D: _D, _F: _F, _X: _X},
    RunCompleted:           {_C: _D, _P: _D},
    RunFailed:              {_C: _F, _P: _F, _W: _F},
    # An operator closes a failed run nobody will retry (it leaves the attention list).
    RunCancelled:           {_C: _X, _P: _X, _W: _X, _F: _X},
    # Operators: one more attempt of a failed run's step; settle an unknown action.
    StepRetryRequested:     {_F: _P, _P: _P},
    ExternalActionResolved: {_P: _P, _W: _W, _F: _F},
}
# fmt: on


class StepPhase(enum.StrEnum):
    """Where the current step is; decides which step events are legal next."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"


class ApprovalOutcome(enum.StrEnum):
    """The latest approval's outcome; ``pending`` until someone (or the clock) decides."""

    PENDING = "pending"
    GRANTED = "granted"
    REJECTED = "rejected"
    EXPIRED = "expired"


class ActionState(enum.StrEnum):
    """An external action is ``intended`` before the call and ``recorded`` after it.

    An action left ``intended`` after a crash has an unknown outcome: the SDK must
    reconcile it with the external system before calling again.
    """

    INTENDED = "intended"
    RECORDED = "recorded"


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """The latest approval of the run (earlier ones live in the event log only)."""

    step: str
    approver: str
    approver_kind: ApproverKind
    subject_hash: str
    subject: str
    requested_at: datetime
    due_at: datetime
    outcome: ApprovalOutcome = ApprovalOutcome.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    comment: str | None = None
    #: Only the approver, a member of the approver group, or an admin with a reason may
    #: decide (requests from SDKs before v3 of ``ApprovalRequested`` accept anyone).
    enforce_decider: bool = False
    #: Why an admin decided an approval that was not theirs.
    override_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAction:
    """A side effect on another system, keyed by its idempotency key."""

    idempotency_key: str
    system: str
    step: str
    state: ActionState
    intended_at: datetime
    external_id: str | None = None
    output_ref: str | None = None
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCall:
    """One model request, kept so a disputed answer can be traced to the gateway's log."""

    request_id: str
    model: str
    step: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletedStep:
    """A finished step and where its result is, so a resumed run need not redo it."""

    step: str
    step_index: int
    attempt: int
    completed_at: datetime
    output_ref: str | None = None


_REQUEST_ID = operator.attrgetter("request_id")


class _RequestIdSets:
    """The request ids of the newest ``model_calls`` tuple of recently active runs.

    Checking that a ``ModelCalled`` is new scanned every model call of the run: 60-240 ns a
    call, so 0.3-1.2 ms at a run's 5,000th call, the one step of applying an event that
    still grew with the run. Here the ids of a tuple are kept in a set, keyed by the tuple's
    identity (the entry holds the tuple, so its id is not reused while cached); appending a
    call through :meth:`appended` moves the set to the new tuple and adds the id, so a run
    the reducer keeps appending to is checked in O(1), and a tuple seen for the first time
    (loaded from the store, an older state) costs one pass to build its set.

    Exact, not a hint: a set is only ever the ids of the one tuple it is registered for (an
    append from a tuple that is not the newest of its run builds no set; that tuple's own
    set, if any, was moved on and it is rebuilt on the next check). Bounded: at most
    :attr:`limit` runs are kept, least recently used first out; runs with fewer than
    :attr:`threshold` calls are scanned, which is as fast. The lock makes a check and an
    append one step each, should two threads apply events to the same run.
    """

    threshold = 64
    limit = 2048

    def __init__(self) -> None:
        self._sets: OrderedDict[int, tuple[tuple[ModelCall, ...], set[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def contain(self, calls: tuple[ModelCall, ...], request_id: str) -> bool:
        if len(calls) < self.threshold:
            return request_id in map(_REQUEST_ID, calls)
        with self._lock:
            entry = self._sets.get(id(calls))
            if entry is not None and entry[0] is calls:
                self._sets.move_to_end(id(calls))
                return request_id in entry[1]
            ids = set(map(_REQUEST_ID, calls))
            self._remember(calls, ids)
            return request_id in ids

    def appended(self, calls: tuple[ModelCall, ...], call: ModelCall) -> tuple[ModelCall, ...]:
        grown = (*calls, call)
        if len(grown) < self.threshold:
            return grown
        with self._lock:
            entry = self._sets.pop(id(calls), None)
            if entry is not None and entry[0] is calls:
                entry[1].add(call.request_id)
                self._remember(grown, entry[1])
        return grown

    def _remember(self, calls: tuple[ModelCall, ...], ids: set[str]) -> None:
        self._sets[id(calls)] = (calls, ids)
        while len(self._sets) > self.limit:
            self._sets.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._sets.clear()


_REQUEST_IDS = _RequestIdSets()


def model_calls_contain(calls: tuple[ModelCall, ...], request_id: str) -> bool:
    """Whether ``calls`` has a call with ``request_id``; O(1) for the newest calls of a run
    the reducer appends to (see :class:`_RequestIdSets`)."""
    return _REQUEST_IDS.contain(calls, request_id)


def append_model_call(calls: tuple[ModelCall, ...], call: ModelCall) -> tuple[ModelCall, ...]:
    """``calls`` with ``call`` appended (a new tuple), keeping the request-id set current."""
    return _REQUEST_IDS.appended(calls, call)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunState:
    """Everything the processor keeps about one run (see the module docstring on growth).

    ``version`` starts at 1 with ``RunStarted`` and grows by exactly one per applied event;
    ``last_offset`` and ``recent_event_digests`` let the reducer drop redelivered events.
    ``approval`` holds only the latest approval; a pending one means ``waiting_approval``
    (until the run ends).
    """

    run_id: str
    status: RunStatus
    agent: str
    owner: str
    #: The run's input exactly as received, next to the prompt version it met.
    input: str
    prompt_version: str
    source: str
    created_at: datetime
    #: The latest ``occurred_at`` applied; never moves back, even when clocks disagree.
    updated_at: datetime
    version: int
    tenant: str | None = None
    current_step: str | None = None
    step_index: int | None = None
    #: Attempt of the current step; 0 before the first step.
    step_attempt: int = 0
    step_phase: StepPhase | None = None
    completed_steps: tuple[CompletedStep, ...] = ()
    #: Retries scheduled in the whole run (``step_attempt - 1`` counts the current step's).
    retry_count: int = 0
    retry_not_before: datetime | None = None
    last_error_reason: FailureReason | None = None
    last_error_message: str | None = None
    #: When the latest step attempt started: with ``retry_not_before``, stops retry loops.
    last_attempt_at: datetime | None = None
    approval: Approval | None = None
    external_actions: tuple[ExternalAction, ...] = ()
    model_calls: tuple[ModelCall, ...] = ()
    needs_attention: bool = False
    output_ref: str | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    #: The run lease (:class:`~runstate.schemas.events.RunClaimed`): events of an older
    #: epoch are refused as fenced. None for a run never claimed (runs from before leases).
    epoch: int | None = None
    #: Who holds the lease: the latest claim's ``claimed_by``.
    holder: str | None = None
    lease_ms: int | None = None
    #: When the lease runs out unless the holder writes again (by the holder's clock).
    lease_until: datetime | None = None
    schema_version: int = STATE_SCHEMA_VERSION
    last_offset: int | None = None
    recent_event_digests: tuple[int, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """True once the run completed, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES

    def lease_held_at(self, now: datetime) -> bool:
        """Whether a holder's lease is still running at ``now`` (a claim now takes it over)."""
        return self.holder is not None and self.lease_until is not None and now < self.lease_until

    def saw_event(self, event_id: str) -> bool:
        """Whether this event id is among the recently applied ones."""
        return event_digest(event_id) in self.recent_event_digests

    def external_action(self, idempotency_key: str) -> ExternalAction | None:
        """The action with this key, or None; check it before calling the system again."""
        for action in self.external_actions:
            if action.idempotency_key == idempotency_key:
                return action
        return None

    def has_model_request(self, request_id: str) -> bool:
        """Whether this model request id is already recorded.

        O(1) for a run the reducer is appending to (:func:`model_calls_contain`), so a run's
        5,000th model call is checked as fast as its 5th.
        """
        return model_calls_contain(self.model_calls, request_id)

    def unrecorded_actions(self) -> tuple[ExternalAction, ...]:
        """Actions intended but not recorded: their outcome must be reconciled."""
        return tuple(a for a in self.external_actions if a.state is ActionState.INTENDED)

    @property
    def needs_person(self) -> bool:
        """Whether only a person can move the run on: it failed (retries spent, an action's
        outcome unknown, the agent gave up), so someone retries a step, settles an action or
        closes it (``runstate runs list --needs-attention``)."""
        return self.status is RunStatus.FAILED or self.needs_attention

    @property
    def has_unknown_actions(self) -> bool:
        """Whether the run stopped (failed) with an action intended and never recorded.

        Only failed runs are checked: in a live run the agent settles its own last intent
        when it resumes; a failed one waits for ``runstate resolve-action``. Failed runs get
        few events, so the walk over the actions is not paid per event of a live run.
        """
        return self.status is RunStatus.FAILED and any(
            a.state is ActionState.INTENDED for a in self.external_actions
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStateChanged:
    """Emitted for every applied event: a compact, typed line of the run's history.

    Carries enough of the approval for a notifier to act on it without reading the state.
    """

    run_id: str
    version: int
    event_id: str
    event_type: str
    occurred_at: datetime
    from_status: RunStatus | None
    to_status: RunStatus
    step: str | None = None
    reason: str | None = None
    approval_outcome: ApprovalOutcome | None = None
    approver: str | None = None
    approval_due_at: datetime | None = None
    decided_by: str | None = None
    needs_attention: bool = False
    #: The run's lease after the event (a claim's line shows the new epoch and holder).
    epoch: int | None = None
    holder: str | None = None
    schema_version: int = STATE_SCHEMA_VERSION
