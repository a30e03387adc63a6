"""Calling an agent back when a run's retry time has come - never earlier, also after restarts.

A step that fails retryably records ``RetryScheduled`` with a not-before time; an agent
that suspended there (:class:`~runstate.errors.RunSuspended`) must be resumed once that
time has come. :meth:`Reactor.on_retry_due <runstate.agents.reactor.Reactor.on_retry_due>`
does it with a :class:`RetryTimetable`: the runs this reactor waits for, by due time.

* A ``RetryScheduled`` change puts its run on the timetable. The change record does not
  carry the not-before time, so the run's state is read (at the end of its partition when
  the plain read is older than the change). A run is due when its state says so: status
  ``in_progress``, step phase ``retry_scheduled`` and a ``retry_not_before``.
* A newer change of a run on the timetable takes the entry off and reads the state again:
  a resumed, cancelled or failed run is dropped; one still waiting (a model call was
  recorded meanwhile) stays, at its new version.
* :meth:`RetryTimetable.due` hands out entries whose ``not_before`` is at or before the
  clock's now, each once per run version; an entry whose handler kept failing is put back
  (and a restarted reactor loads it again, see below), so delivery is at least once.

Restart safety - why the timetable is rebuilt from the query API instead of committing late:
the reactor commits a change's offset right after handling it, so a reactor restarted while
runs wait would never see their ``RetryScheduled`` again. Holding that offset back until the
retry ran would block every later change of the partition - other runs' approvals included -
for as long as the longest backoff (up to hours). Instead, whenever partitions are assigned
(start, restart, rebalance) the reactor lists the runs waiting for a retry
(:meth:`~runstate.agents.client.HttpRunStateReader.list` with status ``in_progress`` and
phase ``retry_scheduled``, filtered by the workers, requiring an answer for every
partition) and puts those of its partitions back on the timetable; revoked partitions are
taken off, so replicas of one reactor group never both resume a run.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from runstate.agents.client import Position
from runstate.agents.ports import Clock
from runstate.runs.state import RunState, RunStateChanged, RunStatus, StepPhase

__all__ = ["RetryDue", "RetryTimetable", "WaitingRuns", "retry_due_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryDue:
    """A run whose next attempt may start now.

    ``version`` is the run's version when it was put on the timetable; the handler resumes
    the run from its recorded state (``DurableRun.attach``), which knows the step and data.
    """

    run_id: str
    version: int
    step: str | None
    #: The attempt the resumed step will make.
    attempt: int
    not_before: datetime


class WaitingRuns(Protocol):
    """Where the timetable reads runs: the SDK's HTTP reader, or ``InMemoryRuns`` in tests."""

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None: ...

    def latest_position(self, run_id: str) -> Position | None: ...

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        phase: StepPhase | str | None = None,
        require_complete: bool = False,
    ) -> list[RunState]: ...


def retry_due_of(state: RunState) -> RetryDue | None:
    """The retry ``state`` waits for, or None when it waits for none."""
    if (
        state.status is not RunStatus.IN_PROGRESS
        or state.step_phase is not StepPhase.RETRY_SCHEDULED
        or state.retry_not_before is None
    ):
        return None
    return RetryDue(
        run_id=state.run_id,
        version=state.version,
        step=state.current_step,
        attempt=state.step_attempt + 1,
        not_before=state.retry_not_before,
    )


class RetryTimetable:
    """Runs waiting for a retry, by not-before time; see the module docstring for the rules.

    Not thread-safe: the reactor's loop is its only user.

    Args:
        runs: where states are read (``read``, ``latest_position``, ``list``).
        clock: what "now" is; a ``ManualClock`` makes tests exact.
        remember_runs: how many runs' called-back versions are kept, so one version is
            called back once per process.
    """

    def __init__(self, runs: WaitingRuns, clock: Clock, *, remember_runs: int = 100_000) -> None:
        self.runs = runs
        self.clock = clock
        self._pending: dict[str, RetryDue] = {}
        self._heap: list[tuple[datetime, str, int]] = []
        self._called: OrderedDict[str, int] = OrderedDict()
        self._remember = remember_runs

    @property
    def pending(self) -> dict[str, RetryDue]:
        """The entries waiting for their time, by run id (a copy)."""
        return dict(self._pending)

    def observe(self, change: RunStateChanged) -> None:
        """Update the timetable for one applied change (in version order per run).

        Raises:
            QueryError: the run's state could not be read; retry the change.
        """
        entry = self._pending.get(change.run_id)
        if entry is not None and change.version <= entry.version:
            return  # redelivered, or already read past it
        if entry is None and change.event_type != "RetryScheduled":
            return
        if change.version <= self._called.get(change.run_id, 0):
            return
        state = self.runs.read(change.run_id)
        if state is None or state.version < change.version:
            # This reader's worker has not applied the change yet: read at the partition's end.
            state = self.runs.read(change.run_id, after=self.runs.latest_position(change.run_id))
        # Only now: a failed read leaves the entry, and the redelivered change finds it.
        self._pending.pop(change.run_id, None)
        if state is not None:
            self._consider(state)

    def rebuild(self, *, owns: Callable[[str], bool] = lambda run_id: True) -> int:
        """Put every waiting run that ``owns(run_id)`` back on the timetable; how many.

        The workers filter by phase, so the answer holds only waiting runs, not every run in
        progress; :func:`retry_due_of` still checks each state (a worker older than the
        ``phase`` filter ignores it and answers every run in progress).

        Raises:
            QueryError: the query API is unreachable or did not answer for every partition.
        """
        states = self.runs.list(
            status=RunStatus.IN_PROGRESS, phase=StepPhase.RETRY_SCHEDULED, require_complete=True
        )
        return sum(self._consider(s) for s in states if owns(s.run_id))

    def forget(self, owns: Callable[[str], bool]) -> int:
        """Take the entries of runs that ``owns(run_id)`` off (partitions revoked); how many."""
        gone = [run_id for run_id in self._pending if owns(run_id)]
        for run_id in gone:
            del self._pending[run_id]
        return len(gone)

    def clear(self) -> None:
        """Forget every pending entry (the called-back memory stays)."""
        self._pending.clear()
        self._heap.clear()

    def seconds_to_next(self) -> float | None:
        """Seconds until the earliest pending entry is due (0 if one is); None if none."""
        self._drop_stale()
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - self.clock.now()).total_seconds())

    def due(self) -> list[RetryDue]:
        """Take the entries whose ``not_before`` has come, earliest first."""
        now = self.clock.now()
        out: list[RetryDue] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return out
            _, run_id, _ = heapq.heappop(self._heap)
            out.append(self._pending.pop(run_id))

    def restore(self, entries: list[RetryDue]) -> None:
        """Put taken entries back (their handler failed), unless a newer one replaced them."""
        for due in entries:
            have = self._pending.get(due.run_id)
            if have is None or have.version < due.version:
                self._pending[due.run_id] = due
                heapq.heappush(self._heap, (due.not_before, due.run_id, due.version))

    def called(self, due: RetryDue) -> None:
        """Record that ``due`` was handled, so the same run version is not called again."""
        self._called[due.run_id] = max(due.version, self._called.get(due.run_id, 0))
        self._called.move_to_end(due.run_id)
        while len(self._called) > self._remember:
            self._called.popitem(last=False)

    def _consider(self, state: RunState) -> bool:
        due = retry_due_of(state)
        if due is None or due.version <= self._called.get(due.run_id, 0):
            return False
        have = self._pending.get(due.run_id)
        if have is not None and have.version >= due.version:
            return False
        self._pending[due.run_id] = due
        heapq.heappush(self._heap, (due.not_before, due.run_id, due.version))
        log.debug("run %s v%s retries at %s", due.run_id, due.version, due.not_before)
        return True

    def _drop_stale(self) -> None:
        """Pop heap heads that were cancelled or replaced (lazy deletion)."""
        while self._heap:
            not_before, run_id, version = self._heap[0]
            entry = self._pending.get(run_id)
            if entry is not None and (entry.version, entry.not_before) == (version, not_before):
                return
            heapq.heappop(self._heap)
