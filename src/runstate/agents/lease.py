"""The SDK's side of the run lease: who this process is, and what a read of the run says
about its claim.

Driving a run starts with a claim (``RunClaimed`` of the run's epoch + 1, see
:mod:`runstate.runs._lease` for the reducer's rules); every event the process writes for the
run carries that epoch. The processor refuses events of an older epoch, so once another
process claims the run this one's writes stop counting; it learns so at its next read of the
run (when the SDK reads: :mod:`runstate.agents.fold`) and stops with
:class:`~runstate.errors.RunFenced`.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from runstate.errors import RunFenced, RunLeased, StepError
from runstate.runs.state import RunState

__all__ = ["DEFAULT_LEASE", "check_claim", "check_free", "default_holder", "lease_ms"]

#: How long a claim lasts without an event of its holder. Only a claimer that will not take a
#: live holder over (``takeover=False``) waits it out; fencing does not depend on it.
DEFAULT_LEASE = timedelta(seconds=30)


def default_holder() -> str:
    """A name unique to this process and claim: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_ms(lease: timedelta) -> int:
    """The lease in whole milliseconds, as ``RunClaimed`` carries it.

    Raises:
        ValueError: the lease is shorter than a millisecond.
    """
    ms = int(lease.total_seconds() * 1000)
    if ms < 1:
        raise ValueError(f"a run lease must last at least 1 ms, not {lease}")
    return ms


def check_free(s: RunState, holder: str, now: datetime) -> None:
    """Refuse to claim a run another live holder has (for ``takeover=False``).

    Raises:
        RunLeased: another holder's lease runs past ``now``.
    """
    if s.holder is not None and s.holder != holder and s.lease_held_at(now):
        assert s.lease_until is not None
        raise RunLeased(
            f"run {s.run_id!r} is driven by {s.holder} (epoch {s.epoch}) whose lease runs until"
            f" {s.lease_until.isoformat()}; try again after that, or attach with"
            " takeover=True to fence it",
            run_id=s.run_id,
            holder=s.holder,
            until=s.lease_until,
        )


def check_claim(s: RunState, holder: str, epoch: int) -> None:
    """Check that the run as read is still this process's to drive.

    Raises:
        RunFenced: another process claimed the run since (or won the race to claim it).
        StepError: this process's claim was refused for another reason (the run ended
            before it was applied); see the dead letters.
    """
    if (s.epoch, s.holder) == (epoch, holder):
        return
    if s.epoch is not None and s.epoch >= epoch:
        raise RunFenced(
            f"run {s.run_id!r} was claimed by {s.holder} (epoch {s.epoch}) after this process"
            f" ({holder}, epoch {epoch}); stop driving it: its events from now on are"
            " dead-lettered as fenced, and the other process continues the run",
            run_id=s.run_id,
            holder=s.holder,
            epoch=s.epoch,
        )
    raise StepError(
        f"the claim of run {s.run_id!r} (epoch {epoch}) was not applied; the run is"
        f" {s.status.value} (see the dead letters for why)"
    )
