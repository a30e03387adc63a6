"""The run lease's rules behind :func:`runstate.runs.reducer.apply`: claims, fencing, renewal.

Private: the reducer calls these around the per-event rules of :mod:`runstate.runs._rules`.

* A claim (:class:`~runstate.schemas.events.RunClaimed`) must carry exactly the run's current
  epoch + 1 (1 for a run never claimed); it then sets the epoch, the holder and the lease. A
  claim of an epoch already taken lost a race with another claimer and is refused as fenced.
  A claim takes the run over whether or not the holder's lease ran out: the second claim
  fences the first. The lease time only tells a claimer whether the holder is presumed alive
  (the SDK's ``takeover=False`` waits for it to run out); the processor never refuses an
  event because a lease expired, since no one else may write until someone claims.
* An event carrying an older epoch than the run's is fenced (refused, so dead-lettered) with
  the reason ``fenced: run claimed by <holder> (epoch N)``. Except for the two events that
  record what already happened outside the run (``ExternalActionRecorded``, ``ModelCalled``):
  the call was made whether or not its writer still holds the run, and dropping its record
  would lose the very id that keeps the next holder from calling again.
* An event carrying an epoch that no claim started (newer than the run's) is refused too:
  its writer skipped the claim.
* Events without an epoch are applied as before the lease existed: they come from writers
  that hold no lease (a person deciding an approval, the expiry timer, an operator) or from
  an SDK older than the lease. Runs never claimed keep working unchanged.
* Each applied event of the current epoch renews the lease to its ``occurred_at`` plus the
  claim's ``lease_ms``; the lease never moves back.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from runstate.runs._rules import NoOp, RejectCode, Rejected, Result, to_status
from runstate.runs.state import RunState
from runstate.schemas.events import (
    AgentEvent,
    ExternalActionRecorded,
    ModelCalled,
    RunClaimed,
)

__all__ = ["claimed", "fenced", "fenced_reason", "renewed"]

#: Records of facts outside the run; applied whichever epoch wrote them (module docstring).
_FACTS = (ExternalActionRecorded, ModelCalled)


def fenced_reason(s: RunState) -> str:
    """The reason every fenced event is dead-lettered with (it starts the same, always)."""
    return f"fenced: run claimed by {s.holder} (epoch {s.epoch})"


def claimed(s: RunState, e: RunClaimed) -> Result:
    """The run after claim ``e``, or why the claim is refused."""
    epoch = e.claimed_epoch
    if (s.epoch, s.holder) == (epoch, e.claimed_by):
        return NoOp.REFLECTED
    to = to_status(s, e)
    if isinstance(to, Rejected):
        return to
    current = s.epoch or 0
    if epoch <= current:
        return Rejected(
            f"{fenced_reason(s)}; the claim of epoch {epoch} by {e.claimed_by!r} lost to it:"
            f" read the run and claim epoch {current + 1} to take it over",
            RejectCode.FENCED,
        )
    if epoch != current + 1:
        return Rejected(
            f"claim of epoch {epoch} by {e.claimed_by!r} for run {s.run_id!r} skips epochs"
            f" (the run's is {current}); claim epoch {current + 1}",
            RejectCode.UNCLAIMED_EPOCH,
        )
    return replace(
        s,
        status=to,
        epoch=epoch,
        holder=e.claimed_by,
        lease_ms=e.lease_ms,
        lease_until=e.occurred_at + timedelta(milliseconds=e.lease_ms),
    )


def fenced(s: RunState, e: AgentEvent) -> Rejected | None:
    """Why ``e`` (any event but a claim or a start) must not be applied, or None."""
    if e.epoch is None or e.epoch == s.epoch:
        return None
    if s.epoch is None or e.epoch > s.epoch:
        return Rejected(
            f"{e.event_type} {e.event_id!r} of run {s.run_id!r} carries epoch {e.epoch}, which"
            f" no claim started (the run's is {s.epoch or 'none'}); claim the run (RunClaimed)"
            " before writing under an epoch",
            RejectCode.UNCLAIMED_EPOCH,
        )
    if isinstance(e, _FACTS):
        return None
    return Rejected(
        f"{fenced_reason(s)}; {e.event_type} {e.event_id!r} was written under epoch"
        f" {e.epoch} by {e.producer!r} and is not applied: that process no longer drives the"
        " run (its next read raises RunFenced)",
        RejectCode.FENCED,
    )


def renewed(s: RunState, e: AgentEvent) -> RunState:
    """``s`` with its lease extended by ``e`` when ``e`` is of the holder's epoch."""
    if e.epoch is None or e.epoch != s.epoch or s.lease_ms is None:
        return s
    until = e.occurred_at + timedelta(milliseconds=s.lease_ms)
    if s.lease_until is not None and until <= s.lease_until:
        return s
    return replace(s, lease_until=until)
