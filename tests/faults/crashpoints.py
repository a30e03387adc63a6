"""Launch ``runstate`` with test-only crash points armed: the worker SIGKILLs itself on cue.

The processor has no fault hooks of its own, and product code must not grow test switches,
so the hooks live here: this module wraps three places of the running worker and then hands
over to the ordinary CLI (``python -m tests.faults.crashpoints processor run ...``). The
hooks sit on faust's RocksDB store and consumer only, not on runstate's internals, so they
test the processor's ordering instead of assuming it.

``RUNSTATE_FAULT_CONTROL=<file>`` names a control file; writing ``<point>:<n>`` into it
makes the process SIGKILL itself (no clean-up, no flush: the same as ``kill -9``) at the
``n``-th time execution crosses ``<point>`` from then on. The test empties the file before
restarting the worker, so the restarted process does not die at once:

* ``after_outputs`` - just before a table write: the processor has awaited the delivery of
  the batch's RunStateChanged and latest-state records (its documented order), the table
  (RocksDB + changelog) is not written yet.
* ``after_rocksdb`` - the state is in RocksDB, its changelog record is at most queued in the
  producer's buffer (faust sends it later): RocksDB is ahead of the changelog.
* ``before_commit`` - faust flushed the producer (changelog sent) and is about to commit the
  source offsets: state and changelog are ahead of the committed offset.

Without the variable nothing is wrapped; every worker in the battery starts this way.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

ENV = "RUNSTATE_FAULT_CONTROL"
POINTS = ("after_outputs", "after_rocksdb", "before_commit")


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
    """Wrap the three places; each crossing asks ``control`` whether to die now."""
    from faust.stores import rocksdb
    from faust.transport.drivers import aiokafka

    original_set = rocksdb.Store._set

    def _set(self: Any, key: bytes, value: bytes | None) -> None:
        control.crossed("after_outputs")
        original_set(self, key, value)
        control.crossed("after_rocksdb")

    rocksdb.Store._set = _set

    original_commit = aiokafka.Consumer._commit

    async def _commit(self: Any, offsets: Any) -> bool:
        control.crossed("before_commit")
        return bool(await original_commit(self, offsets))

    aiokafka.Consumer._commit = _commit


def main() -> None:
    path = os.environ.get(ENV)
    if path:
        arm(CrashControl(path))
    from runstate.cli import app

    app(prog_name="runstate")


if __name__ == "__main__":
    main()
