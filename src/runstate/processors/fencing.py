"""Self-fencing of a worker that may have lost its partitions without noticing.

Kafka fences a stale consumer's offset *commits* (its generation is gone), but not its
*produces*: a worker that was stopped (SIGSTOP, a VM pause, a blocked event loop) past the
session timeout wakes up mid-batch and would still send its outputs and table/changelog
records for partitions another worker now owns. Its stale changelog records then land after
the new owner's, and a later restore regresses the runs to an older state. faust's
exactly-once mode (transactional fencing) is not usable, so the worker fences itself:

* :class:`StallWatchdog` ticks every ~100 ms on the event loop. A stopped process, or one
  whose loop was blocked, sees a gap between ticks after it resumes; heartbeats were not
  sent during that gap either, so the group may have moved on without it.
* :class:`BatchFence` is asked before a batch's outputs are sent and again before its table
  writes: a stall since the batch was taken (or since the last tick, if the watchdog has not
  run yet) raises :class:`Fenced` and nothing of the batch is written; partitions no longer
  assigned are reported so their records are dropped (not acknowledged, so never committed).
* :func:`keep_monotonic` is the second line: a restore keeps a changelog record only if its
  state version is at least the local one, so a stale record that slipped through the
  residual window (a stall after the last check) cannot take a run back in time.

The residual window is a stall between the last check and the moment the records reach the
producer's socket: a few synchronous statements plus what aiokafka already holds in its
accumulator. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from runstate.errors import Error

__all__ = [
    "EXIT_BATCH_FAILED",
    "EXIT_FENCED",
    "EXIT_OFFSET_GAP",
    "BatchFence",
    "Fenced",
    "StallWatchdog",
    "halt",
    "keep_monotonic",
    "peek_version",
]

log = logging.getLogger(__name__)

#: A batch could not be processed (Kafka or the local store failed); nothing was committed.
EXIT_BATCH_FAILED = 70
#: The worker stalled past a safe share of its session timeout and stopped itself.
EXIT_FENCED = 75
#: A partition's records past its commit mark were not redelivered after seeking back to it
#: (see :mod:`runstate.processors.commit_marks`); nothing past the mark was committed.
EXIT_OFFSET_GAP = 76


class Fenced(Error):
    """This worker may no longer own its partitions; it must not write and must restart."""


class StallWatchdog:
    """Notices that the event loop did not run for a while (process stopped or blocked).

    ``threshold_s`` should be a safe share of the consumer session timeout: a gap that long
    may already have cost the group membership (the last heartbeat can be up to one
    heartbeat interval older than the gap's start).
    """

    def __init__(
        self,
        *,
        threshold_s: float,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._clock = clock
        self.last_tick = clock()
        #: False until :meth:`run` ticks: before that, no gap means anything.
        self.running = False
        #: How many stalls were seen; a batch remembers the count it started with.
        self.stalls = 0
        self.longest_s = 0.0

    def tick(self) -> float:
        """Record that the loop runs; returns the gap since the previous tick."""
        now = self._clock()
        gap = now - self.last_tick
        self.last_tick = now
        if gap > self.threshold_s:
            self.stalls += 1
            self.longest_s = max(self.longest_s, gap)
        return gap

    def stalled_since(self, stalls_at_start: int) -> float | None:
        """The stall that happened after a point (a ``stalls`` count), if any, in seconds.

        Counts the current gap too: after a resume the checking code may run before the
        watchdog's next tick.
        """
        current = self._clock() - self.last_tick
        if self.running and current > self.threshold_s:
            return current
        if self.stalls != stalls_at_start:
            return self.longest_s
        return None

    async def run(self, *, armed: Callable[[], bool], on_stall: Callable[[float], None]) -> None:
        """Tick until cancelled; ``on_stall(gap)`` for a stall that began while ``armed()``
        was true (checked after each tick, so a stall at start-up is not one)."""
        was_armed = False
        self.last_tick = self._clock()
        self.running = True
        while True:
            await asyncio.sleep(self.interval_s)
            gap = self.tick()
            if gap > self.threshold_s and was_armed:
                on_stall(gap)
            was_armed = armed()


class Assignment(Protocol):
    def active_partitions(self) -> Collection[int]:
        """The events-topic partitions this worker is assigned right now."""
        ...


@dataclass
class BatchFence:
    """The checks a batch passes before it may write anything (see the module docstring)."""

    watchdog: StallWatchdog
    assignment: Assignment

    def begin(self) -> int:
        """Call when a batch is taken; pass the result to :meth:`check`."""
        return self.watchdog.stalls

    def check(self, token: int, partitions: Collection[int], *, before: str) -> set[int]:
        """Partitions of the batch no longer assigned (their records must be dropped).

        Raises:
            Fenced: the worker stalled since the batch was taken; nothing of it may be
                written, and the worker must stop without committing.
        """
        stall = self.watchdog.stalled_since(token)
        if stall is not None:
            raise Fenced(
                f"the event loop stalled {stall:.1f} s (limit {self.watchdog.threshold_s:.1f} s)"
                f" while a batch was in flight, before its {before}: another worker may own"
                " its partitions now; restarting without writing or committing it"
            )
        owned = set(self.assignment.active_partitions())
        return {p for p in partitions if p not in owned}


def halt(reason: str, code: int, *, restart_in_place: bool = False) -> None:
    """Stop this process now, committing nothing (no faust shutdown runs).

    With ``restart_in_place`` the process re-executes itself (same pid, fresh state): the
    supervisor sees no exit. Otherwise it exits with ``code``. Kafka sockets and the RocksDB
    locks are closed by the exec/exit; the group notices the departure by session timeout.
    """
    action = "restarting in place" if restart_in_place else f"exiting with code {code}"
    log.critical("stopping the worker without committing (%s): %s", action, reason)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream must not prevent the stop
            stream.flush()
    if restart_in_place:
        try:
            os.execv(sys.executable, list(sys.orig_argv))
        except OSError as exc:
            sys.stderr.write(f"cannot re-execute ({exc}); exiting with code {code}\n")
            sys.stderr.flush()
    os._exit(code)


# -- monotonic restore ---------------------------------------------------------------------

_HEADER = 10  # C3 01 + 8-byte fingerprint (Avro single-object encoding)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """One zig-zag varint (Avro int/long) at ``pos``; returns (value, next position)."""
    shift = 0
    raw = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7


def peek_version(data: bytes) -> int | None:
    """The ``version`` of an encoded RunState without decoding it; None if unreadable.

    Relies on the leading fields of ``RunState.v1.avsc``: ``run_id`` (string),
    ``schema_version`` (int), ``version`` (long). A later layout must keep them first.
    """
    try:
        if len(data) < _HEADER or data[0] != 0xC3 or data[1] != 0x01:
            return None
        length, pos = _varint(data, _HEADER)
        if length < 0:
            return None
        pos += length
        _, pos = _varint(data, pos)
        version, _ = _varint(data, pos)
        return version
    except ValueError:
        return None


T = TypeVar("T")


def keep_monotonic(
    records: Iterable[T],
    *,
    key_value: Callable[[T], tuple[int, bytes, bytes | None]],
    local: Callable[[int, bytes], bytes | None],
    on_stale: Callable[[T, int, int], None] | None = None,
) -> Iterator[T]:
    """The changelog records worth applying: none takes a key to an older version.

    ``key_value`` gives a record's (partition, key, value); ``local`` reads the stored value.
    Tombstones and records whose version cannot be read are always kept.
    """
    newest: dict[tuple[int, bytes], int] = {}
    for record in records:
        partition, key, value = key_value(record)
        incoming = None if value is None else peek_version(value)
        if incoming is None:
            newest[(partition, key)] = -1  # deleted or unreadable: anything may follow
            yield record
            continue
        have = newest.get((partition, key))
        if have is None:
            stored = local(partition, key)
            have = None if stored is None else peek_version(stored)
        if have is not None and incoming < have:
            if on_stale is not None:
                on_stale(record, incoming, have)
            newest[(partition, key)] = have
            continue
        newest[(partition, key)] = incoming
        yield record
