"""The writer's local fold: the run's state kept in the agent process, from its own events.

The run lease makes one process the only writer of its run's step events, so that process
can know the run's state without asking: it applies each event it wrote (once the broker
confirmed it, with its offset) with :func:`runstate.runs.reducer.apply`, the function the
processor applies it with. A step whose body has no side effect then costs its produces and
no read. The process still reads the processor's state where facts come from outside (attach
and resume, a decision on an approval, ``call_once`` before an external call, the end of
the run); each such read *rebases* the fold on what the processor holds.

What can make the fold and the processor differ, and how it is caught:

* Another process claimed the run (a fence), or an operator ended it: the processor refuses
  our later events, the fold applied them. The next outside read finds the newer epoch
  (:class:`~runstate.errors.RunFenced`) or the missing events (:class:`~runstate.errors.StepError`)
  before anything else is decided.
* Anything outside written to the run lands in its partition between two of our events, so
  the offsets the broker returns for our events are no longer consecutive: the fold is marked
  :attr:`LocalFold.stale` and the SDK looks (one read that does not wait for the processor)
  before its next decision. That look catches a fence or an end the processor has already
  applied (a fenced process then stops before running another step body); it is an early
  warning, the outside reads above are the guarantee. On a partition shared with busy runs
  it happens often, and costs one query each time.
* An event the fold refused would be refused by the processor too (same state, same
  function), unless the state differed; then it is one of the cases above.

Checking that our events were applied uses the digests of the last
:data:`~runstate.runs.state.RECENT_EVENT_IDS_LIMIT` applied event ids every state keeps: an
event the fold applied must be among them. When more events than that were applied since
the last read (a long loop of steps with no outside read), only our last one can still be
checked; an event refused in the middle of such a loop is one whose successors were refused
too in every case we know (a fence or an end refuses everything after it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from runstate.agents.client import Position
from runstate.errors import StepError
from runstate.runs.reducer import Applied, apply
from runstate.runs.state import RECENT_EVENT_IDS_LIMIT, RunState, event_digest
from runstate.schemas.events import AgentEvent

__all__ = ["LocalFold"]


@dataclass
class LocalFold:
    """One run's state as this process's own events made it, since the last outside read."""

    run_id: str
    state: RunState | None = None
    #: True when another record landed in the run's partition between two of our events.
    stale: bool = False
    _base_version: int = 0
    _unverified: deque[tuple[int, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_EVENT_IDS_LIMIT)
    )
    _last_own: tuple[int, int] | None = None

    @property
    def unverified(self) -> int:
        """How many own events the fold applied that no outside read confirmed yet."""
        return len(self._unverified)

    def own(self, event: AgentEvent, at: Position) -> None:
        """Apply an event this process wrote, stored at ``at``, as the processor will."""
        if self._last_own is not None and (at.partition, at.offset) != (
            self._last_own[0],
            self._last_own[1] + 1,
        ):
            self.stale = True
        self._last_own = (at.partition, at.offset)
        if self.state is None:
            return  # before the first read (a start): that read is the base
        outcome = apply(self.state, event, offset=at.offset)
        if isinstance(outcome, Applied):
            self.state = outcome.state
            self._unverified.append((event_digest(event.event_id), event.event_type))

    def rebase(self, s: RunState, *, check: bool = True) -> None:
        """Continue from the processor's state ``s``, read at or after our last event.

        Raises:
            StepError: ``check`` is set and an event the fold applied is not applied in
                ``s`` (the processor refused it: the run changed from outside).
        """
        if check:
            self._check(s)
        self.state = s
        self.stale = False
        self._base_version = s.version
        self._unverified.clear()

    def caught_up(self, s: RunState) -> bool:
        """Whether ``s`` (read without waiting) includes our last event."""
        return (
            self._last_own is not None
            and s.last_offset is not None
            and s.last_offset >= self._last_own[1]
        )

    def _check(self, s: RunState) -> None:
        if not self._unverified:
            return
        applied_since = s.version - self._base_version
        mine = list(self._unverified)
        if applied_since > RECENT_EVENT_IDS_LIMIT:
            mine = mine[-1:]
        seen = set(s.recent_event_digests)
        missing = [name for digest, name in mine if digest not in seen]
        if missing:
            raise StepError(
                f"run {self.run_id!r} changed from outside since this process last read it:"
                f" its {missing[0]} was not applied by the processor ({len(missing)} of its last"
                f" {len(mine)} events were not); the run is {s.status.value} (epoch {s.epoch},"
                f" holder {s.holder}); stop driving it, see the dead letters, and attach again"
                " to continue from the recorded state"
            )
