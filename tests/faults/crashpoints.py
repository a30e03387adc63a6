"""Launch ``runstate`` with crash points a scenario can arm while the worker runs.

The runtime has crash points of its own (:mod:`runstate.runtime.fault_hooks`): the
checkpoint calls :meth:`CrashPoints.reached` at each step of its commit protocol, and
``RUNSTATE_RUNTIME_CRASH_AT`` arms them once, at start-up. A scenario wants more: to pick the
moment while load is already flowing and to arm a long-running worker again and again. So
this module wraps ``CrashPoints.reached`` with a control file and then hands over to the
ordinary CLI (``python -m tests.faults.crashpoints processor run ...``);
the product's own counting still runs underneath.

``RUNSTATE_FAULT_CONTROL=<file>`` names the control file; writing ``<point>:<n>`` into it
makes the process SIGKILL itself (no clean-up, no flush: the same as ``kill -9``) the
``n``-th time the checkpoint passes ``<point>`` from then on. The test empties the file
before restarting the worker, so the restarted process does not die at once. The points
(exactly-once mode), in the order one checkpoint passes them:

* ``after_produce`` - the interval's outputs and changelog records are queued in the open
  transaction, nothing is flushed, the offsets are not in it yet;
* ``before_commit`` - everything is flushed and the offsets are in the transaction; the
  commit is not asked for (the broker aborts the transaction when the next instance of this
  worker registers its ``transactional.id``);
* ``after_commit`` - the broker committed; the local store is *not* updated yet (restore
  must bring it up to the changelog);
* ``after_apply`` - the store is updated too; the next transaction is not begun.

Without the variable nothing is wrapped.
"""

from __future__ import annotations

import os
import signal
import sys

from runstate.runtime.fault_hooks import POINTS, CrashPoints

ENV = "RUNSTATE_FAULT_CONTROL"
#: The points in the order one checkpoint passes them.
ORDER = ("after_produce", "before_commit", "after_commit", "after_apply")
assert set(ORDER) == POINTS, "the runtime's crash points changed: update ORDER and the docs"


class CrashControl:
    """Reads ``<point>:<n>`` from the control file whenever it changes; kills on the n-th
    crossing of that point after reading it. A missing or empty file disarms."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: tuple[int, int] | None = None
        self.point: str | None = None
        self.left = 0

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.seen, self.point = None, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self.seen:
            return
        self.seen = stamp
        with open(self.path) as f:
            point, _, count = f.read().strip().partition(":")
        self.point = point if point in POINTS else None
        self.left = int(count or "1")

    def crossed(self, point: str) -> None:
        self._refresh()
        if self.point != point:
            return
        self.left -= 1
        if self.left <= 0:
            sys.stderr.write(f"[crashpoint] SIGKILL at {point}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def arm(control: CrashControl) -> None:
    """Wrap the runtime's crash points: each pass asks ``control`` first, then counts as the
    product would (``RUNSTATE_RUNTIME_CRASH_AT`` keeps working)."""
    original = CrashPoints.reached

    def reached(self: CrashPoints, point: str) -> None:
        control.crossed(point)
        original(self, point)

    CrashPoints.reached = reached  # type: ignore[method-assign]


def main() -> None:
    path = os.environ.get(ENV)
    if path:
        arm(CrashControl(path))
    from runstate.cli import app

    app(prog_name="runstate")


if __name__ == "__main__":
    main()
