"""Crash points: let a test kill the worker at the worst moments of the commit protocol.

``RUNSTATE_RUNTIME_CRASH_AT=after_commit:5`` makes the process ``os._exit(137)`` (what a
``kill -9`` looks like to its parent) the 5th time the checkpoint passes ``after_commit``.
No cleanup runs, no buffer is flushed: exactly the crash the protocol must survive. Unset,
every hook is a dictionary lookup.

A test hook, kept in the package because the hook points sit inside the commit protocol
(:mod:`runstate.runtime.checkpoint`) and the fault battery kills real worker processes; only
``RUNSTATE_RUNTIME_CRASH_AT`` arms it, and nothing outside the runtime imports it.
"""

from __future__ import annotations

import logging
import os
import sys

from runstate.errors import ConfigError

__all__ = ["POINTS", "CrashPoints"]

log = logging.getLogger(__name__)

#: Where the checkpoint calls :meth:`CrashPoints.reached`.
#: (At-least-once: ``before_commit`` comes after the store apply, before the offset commit,
#: and ``after_commit`` right after the offset commit.)
POINTS = frozenset(
    {
        "after_produce",  # outputs and changelog records sent, offsets not yet in the txn
        "before_commit",  # offsets in the transaction, commit not yet asked for
        "after_commit",  # the broker committed; the local store is not yet updated
        "after_apply",  # the store is updated; the next transaction not yet begun
    }
)

EXIT_CRASHED = 137


class CrashPoints:
    """Counts passes through named points and exits the process at an armed one."""

    def __init__(self, spec: str = "") -> None:
        """Arm the points in ``spec`` (``"point:n,point:n"``; empty: none).

        Raises:
            ConfigError: an unknown point or a count that is not a positive number.
        """
        self._left: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            point, _, count = part.partition(":")
            if point not in POINTS or not count.isdigit() or int(count) < 1:
                raise ConfigError(
                    f"bad crash point {part!r}: use point:n with point one of"
                    f" {sorted(POINTS)} and n >= 1"
                )
            self._left[point] = int(count)

    def reached(self, point: str) -> None:
        """Count a pass through ``point``; exit 137 on the armed pass."""
        left = self._left.get(point)
        if left is None:
            return
        if left > 1:
            self._left[point] = left - 1
            return
        print(f"runstate runtime: crash point {point} reached, exiting", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_CRASHED)
