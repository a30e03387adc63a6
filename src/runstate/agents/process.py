"""One pass of an agent process: start or resume a run, drive it as far as it goes, and say
how it ended as an exit code (for a supervisor or a queue) and a status line.

The exit codes: 0 completed, 10 waiting (suspended at an approval or a retry; run the
process again after the decision or the retry time), 4 needs attention (a side effect's
outcome is unknown and must be reconciled), 75 fenced (another process claimed the run and
drives it now: do not run this pass again), 1 failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runstate.errors import Error, ReconcileRequired, RunFenced, RunSuspended

__all__ = [
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_FENCED",
    "EXIT_RECONCILE",
    "EXIT_WAITING",
    "PassOutcome",
    "drive_once",
]

EXIT_COMPLETED, EXIT_FAILED, EXIT_RECONCILE, EXIT_WAITING = 0, 1, 4, 10
#: As the processor's worker exits when a newer instance fenced it.
EXIT_FENCED = 75


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """How one pass ended: ``completed``, ``waiting``, ``needs_attention``, ``fenced`` or
    ``failed``."""

    status: str
    code: int
    detail: str


def drive_once(drive: Callable[[], str]) -> PassOutcome:
    """Call ``drive`` (start or attach the run, then drive it) and classify how it ended.

    Errors that are not runstate's (:class:`~runstate.errors.Error`) propagate.
    """
    try:
        detail = drive()
    except RunSuspended as exc:
        return PassOutcome("waiting", EXIT_WAITING, str(exc))
    except ReconcileRequired as exc:
        return PassOutcome("needs_attention", EXIT_RECONCILE, str(exc))
    except RunFenced as exc:
        return PassOutcome("fenced", EXIT_FENCED, str(exc))
    except Error as exc:
        return PassOutcome("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    return PassOutcome("completed", EXIT_COMPLETED, detail)
