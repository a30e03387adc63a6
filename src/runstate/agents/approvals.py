"""Manual approvals: what exactly is being approved, and deciding it exactly once.

An approval is bound to its *subject* (the data the person is shown: the clean form, the
limit) by ``subject_hash``, the SHA-256 of the subject's canonical JSON. A decision names the
hash it was made for, so an approval of yesterday's version of a request cannot approve
today's: the SDK refuses it here, before anything is sent, and the reducer refuses it again
if the subject changed in between (a race no client-side check can close).

Deciding reads the run's state first, at the end of its partition (every event written before
the command started is applied), and refuses - with nothing emitted - when the run is not
waiting, the approval was already decided, or the hash is stale. After emitting, it reads the
state again at the decision's own position to confirm the processor applied it.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from runstate.agents.client import RunStateReader
from runstate.agents.ports import EventSink
from runstate.errors import ApprovalError
from runstate.identity import NotAuthorized, Principal
from runstate.runs.reducer import RejectCode, Rejected, apply
from runstate.runs.state import ApprovalOutcome, RunState, RunStatus
from runstate.schemas.events import ApprovalGranted, ApprovalRejected, ApproverKind
from runstate.schemas.sealed import subject_of
from runstate.streams.producer import Delivery

__all__ = [
    "ApprovalDecision",
    "DecisionReceipt",
    "PendingApproval",
    "approve",
    "canonical_json",
    "check_decider",
    "decision_of",
    "pending_approval",
    "reject",
    "subject_hash",
]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} has no canonical JSON form; pass plain data")


def canonical_json(subject: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, UTF-8 as is, no NaN.

    Two subjects that are equal as data give the same text whatever their key order, so
    their hashes agree between the agent that asks and the person who decides.

    Raises:
        TypeError: the subject holds a value without a canonical form.
        ValueError: the subject holds NaN or infinity.
    """
    return json.dumps(
        subject,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_plain,
    )


def subject_hash(subject: Any) -> str:
    """``sha256:<hex>`` of the subject's canonical JSON; a ``str`` is hashed as a JSON string."""
    digest = hashlib.sha256(canonical_json(subject).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """What a run waits for: who must decide what, by when."""

    run_id: str
    step: str
    approver: str
    approver_kind: ApproverKind
    subject: str
    subject_hash: str
    requested_at: datetime
    due_at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A decided approval as the agent sees it when it resumes."""

    step: str
    outcome: ApprovalOutcome
    subject_hash: str
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None

    @property
    def granted(self) -> bool:
        return self.outcome is ApprovalOutcome.GRANTED


@dataclass(frozen=True, slots=True)
class DecisionReceipt:
    """A decision the processor applied."""

    run_id: str
    outcome: ApprovalOutcome
    by: str
    subject_hash: str
    delivery: Delivery
    state: RunState


def pending_approval(state: RunState | None) -> PendingApproval | None:
    """The approval the run waits for, or None if it waits for none."""
    if state is None or state.status is not RunStatus.WAITING_APPROVAL:
        return None
    a = state.approval
    if a is None or a.outcome is not ApprovalOutcome.PENDING:
        return None
    return PendingApproval(
        run_id=state.run_id,
        step=a.step,
        approver=a.approver,
        approver_kind=a.approver_kind,
        subject=a.subject,
        subject_hash=a.subject_hash,
        requested_at=a.requested_at,
        due_at=a.due_at,
    )


def decision_of(state: RunState, step: str) -> ApprovalDecision | None:
    """The decided approval of ``step``, or None if that step's approval is not decided."""
    a = state.approval
    if a is None or a.step != step or a.outcome is ApprovalOutcome.PENDING:
        return None
    return ApprovalDecision(
        step=a.step,
        outcome=a.outcome,
        subject_hash=a.subject_hash,
        decided_by=a.decided_by,
        decided_at=a.decided_at,
        comment=a.comment,
    )


def approve(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    *,
    by: Principal | str,
    comment: str | None = None,
    expected_subject_hash: str | None = None,
    override_reason: str | None = None,
) -> DecisionReceipt:
    """Grant the approval ``run_id`` waits for.

    Args:
        by: who decides: the authenticated :class:`~runstate.identity.Principal` (its name,
            groups and roles go into the decision and are checked here). A bare name is
            the unauthenticated form of before: not checked here; the processor still
            refuses it for a request that enforces its decider, unless it is the approver.
        expected_subject_hash: the hash of the subject the person was shown; a different
            pending hash means they saw an older version, and the approval is refused.
        override_reason: an admin deciding an approval that is not theirs says why; it is
            recorded with the decision.

    Raises:
        NotAuthorized: ``by`` is not the approver, not in the approver group, and not an
            admin giving an override reason; nothing was decided.
        ApprovalError: nothing is pending (not waiting, already decided, unknown run), the
            subject is stale, or the processor refused the decision; nothing was decided.
        QueryError: the state could not be read.
    """
    return _decide(sink, reader, run_id, True, by, comment, expected_subject_hash, override_reason)


def reject(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    *,
    by: Principal | str,
    reason: str,
    expected_subject_hash: str | None = None,
    override_reason: str | None = None,
) -> DecisionReceipt:
    """Reject the approval ``run_id`` waits for; ``reason`` is kept as the decision's comment.

    Raises:
        NotAuthorized, ApprovalError, QueryError: as :func:`approve`.
    """
    return _decide(sink, reader, run_id, False, by, reason, expected_subject_hash, override_reason)


def check_decider(pending: PendingApproval, by: Principal, override_reason: str | None) -> None:
    """Refuse unless ``by`` is whom ``pending`` asks, or an admin giving a reason.

    Raises:
        NotAuthorized: naming who may decide.
    """
    if pending.approver_kind is ApproverKind.USER:
        allowed = by.name == pending.approver
        whom = f"user {pending.approver!r}"
    else:
        allowed = pending.approver in by.groups
        whom = f"a member of group {pending.approver!r}"
    if allowed or (by.is_admin and (override_reason or "").strip()):
        return
    hint = "; as an admin, give --override-reason to decide it anyway" if by.is_admin else ""
    raise NotAuthorized(
        f"{by.name!r} may not decide the approval of run {pending.run_id!r}: it is for"
        f" {whom} (your groups: {', '.join(by.sorted_groups) or 'none'}){hint}"
    )


def _decide(
    sink: EventSink,
    reader: RunStateReader,
    run_id: str,
    grant: bool,
    decider: Principal | str,
    comment: str | None,
    expected: str | None,
    override_reason: str | None,
) -> DecisionReceipt:
    verb = "approve" if grant else "reject"
    by = decider if isinstance(decider, str) else decider.name
    state = reader.read(run_id, after=reader.latest_position(run_id))
    if state is None:
        raise ApprovalError(f"cannot {verb} run {run_id!r}: no such run; check the run id")
    pending = pending_approval(state)
    if pending is None:
        raise ApprovalError(f"cannot {verb} run {run_id!r}: {_why_not_pending(state)}")
    if expected is not None and expected != pending.subject_hash:
        raise ApprovalError(
            f"cannot {verb} run {run_id!r}: the subject changed since it was shown (you saw"
            f" {expected}, it is now {pending.subject_hash}); review the current subject"
            f" (`runstate runs show {run_id}`) and decide again"
        )
    who: dict[str, Any] = {}
    if isinstance(decider, Principal):
        check_decider(pending, decider, override_reason)
        who = {"by_groups": decider.sorted_groups, "by_roles": decider.sorted_roles}
    if override_reason:
        who["override_reason"] = override_reason
    cls = ApprovalGranted if grant else ApprovalRejected
    event = sink.new_event(
        cls,
        run_id,
        by=by,
        subject_hash=pending.subject_hash,
        comment=comment,
        **who,
        **data_subject_of(state),
    )
    judged = apply(state, event)
    if isinstance(judged, Rejected) and judged.code is RejectCode.NOT_AUTHORIZED:
        raise NotAuthorized(f"cannot {verb} run {run_id!r}: {judged.reason}")
    delivery = sink.emit(event)
    after = reader.read(run_id, after=delivery)
    if after is None or not after.saw_event(event.event_id):
        now = "unknown" if after is None else _why_not_pending(after)
        raise ApprovalError(
            f"the processor refused to {verb} run {run_id!r} ({now}); another decision or"
            " a new request won the race - check `runstate runs show` and the dead letters"
        )
    outcome = ApprovalOutcome.GRANTED if grant else ApprovalOutcome.REJECTED
    return DecisionReceipt(run_id, outcome, by, pending.subject_hash, delivery, after)


def data_subject_of(state: RunState) -> dict[str, str]:
    """``{"data_subject": ...}`` for a decision or command on a run whose input is sealed
    (so its comment or reason is sealed for the same subject), else nothing."""
    found = subject_of(state.input)
    return {} if found is None else {"data_subject": found}


def _why_not_pending(state: RunState) -> str:
    a = state.approval
    if a is not None and a.outcome is not ApprovalOutcome.PENDING:
        by = f" by {a.decided_by}" if a.decided_by else ""
        when = f" at {a.decided_at.isoformat()}" if a.decided_at else ""
        return f"its approval was already {a.outcome.value}{by}{when}; nothing to decide"
    if a is None:
        return f"it is {state.status.value} and never asked for an approval"
    return f"it is {state.status.value}, not waiting for an approval"
