"""The worker's status on a page of shared memory, for ``/health`` answered by another process.

``/health`` answered inside the worker waits for the GIL, which the poll loop holds while it
works; on an oversubscribed machine the scheduler takes the core from the loop while it holds
the GIL, and the answer waits with it (hundreds of milliseconds in the scale benchmark). The
health process (:mod:`runstate.runtime.health_process`) shares no GIL with the loop: it reads
this board, written by the worker.

Two writers, one reader, no lock:

* the loop's thread writes its **heartbeat** (the time of its last poll) once per iteration:
  one 8-byte store into the mapping, well under a microsecond;
* the **status** (what ``/health`` says: ready, partitions, the reason it is degraded, the
  last checkpoint) is written every few tens of milliseconds by the loop's thread, and by a
  thread of the worker while the loop is held (a broker that is away; see
  :mod:`runstate.runtime.health_supervisor`), one at a time. Two slots: a new status goes to
  the slot not published, then the sequence number names it; a reader checks a CRC-32 of
  what it read and reads again on a mismatch (a slot rewritten under it, which takes two
  publications during one read).

Only the standard library: the health process imports this module and nothing else of the
runtime, so it starts in tens of milliseconds.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BoardReader", "BoardView", "StatusBoard", "health_body"]

_MAGIC = b"RSHB"
_VERSION = 1
#: magic, version, started (monotonic), heartbeat (monotonic), sequence number
_HEADER = struct.Struct("<4sIddQ")
_HEARTBEAT = struct.Struct("<d")
_HEARTBEAT_AT = 16
#: per slot: published (monotonic), length, CRC-32 of the JSON
_SLOT_HEADER = struct.Struct("<dII")
#: the status of 1,000 partitions in three lists and a long reason fits several times over
SLOT_BYTES = 64 * 1024
_SLOT_AT = (_HEADER.size, _HEADER.size + _SLOT_HEADER.size + SLOT_BYTES)
SIZE = _HEADER.size + 2 * (_SLOT_HEADER.size + SLOT_BYTES)
#: reasons longer than this are cut (a broker error can quote a long librdkafka message)
REASON_CHARS = 2_000


class StatusBoard:
    """The worker's side: an unnamed shared mapping (``memfd`` on Linux, else an unlinked
    temporary file) whose descriptor a child process inherits (``fd``)."""

    def __init__(self, *, started: float | None = None) -> None:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("runstate-health", 0)
        else:  # pragma: no cover - not Linux
            self.fd, path = tempfile.mkstemp(prefix="runstate-health-")
            os.unlink(path)
        os.ftruncate(self.fd, SIZE)
        self._map = mmap.mmap(self.fd, SIZE)
        self._seq = 0
        now = time.monotonic() if started is None else started
        _HEADER.pack_into(self._map, 0, _MAGIC, _VERSION, now, now, 0)

    def beat(self, at: float) -> None:
        """The loop polled at ``at`` (``time.monotonic()``): once per iteration, cheap."""
        _HEARTBEAT.pack_into(self._map, _HEARTBEAT_AT, at)

    def publish(self, status: Mapping[str, Any], *, at: float | None = None) -> None:
        """Make ``status`` (JSON-able) what the board says from now on."""
        data = json.dumps(status, separators=(",", ":")).encode()
        if len(data) > SLOT_BYTES:
            raise ValueError(f"a status of {len(data)} bytes does not fit {SLOT_BYTES}")
        seq = self._seq + 1
        offset = _SLOT_AT[seq % 2]
        published = time.monotonic() if at is None else at
        _SLOT_HEADER.pack_into(self._map, offset, published, len(data), zlib.crc32(data))
        start = offset + _SLOT_HEADER.size
        self._map[start : start + len(data)] = data
        struct.pack_into("<Q", self._map, _HEADER.size - 8, seq)
        self._seq = seq

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


@dataclass(frozen=True)
class BoardView:
    """One consistent reading of the board."""

    started: float
    heartbeat: float
    published: float
    status: dict[str, Any]


class BoardReader:
    """The health process's side: the board from an inherited descriptor, read-only."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, SIZE, access=mmap.ACCESS_READ)
        magic, version, *_ = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"not a status board of this version ({magic!r} {version})")

    def read(self) -> BoardView | None:
        """The latest status and heartbeat; None before the first publication."""
        for _ in range(100):
            _, _, started, _, seq = _HEADER.unpack_from(self._map, 0)
            if seq == 0:
                return None
            offset = _SLOT_AT[seq % 2]
            published, length, crc = _SLOT_HEADER.unpack_from(self._map, offset)
            start = offset + _SLOT_HEADER.size
            data = self._map[start : start + min(length, SLOT_BYTES)]
            if zlib.crc32(data) == crc and length <= SLOT_BYTES:
                return BoardView(started, self._heartbeat(), published, json.loads(data))
        raise RuntimeError("the status board changed under every one of 100 readings")

    def _heartbeat(self) -> float:
        """Read until two readings agree: an 8-byte store is not promised to be atomic."""
        previous = _HEARTBEAT.unpack_from(self._map, _HEARTBEAT_AT)[0]
        while True:
            now = _HEARTBEAT.unpack_from(self._map, _HEARTBEAT_AT)[0]
            if now == previous:
                return float(now)
            previous = now

    def close(self) -> None:
        self._map.close()


def health_body(
    status: Mapping[str, Any],
    *,
    loop_age_s: float,
    status_age_s: float,
    uptime_s: float,
    stall_s: float,
) -> dict[str, Any]:
    """What ``/health`` answers, in the worker and in the health process alike.

    ``degraded`` while the broker errs (or partitions were lost) or the loop has not polled
    for ``stall_s``. ``stalled`` when the loop has not polled for ``stall_s`` and the worker
    gives no reason it waits (a broker it waits for, its start, an assignment) in a status
    at most ``stall_s`` old: the loop is stuck, or the whole process stands still.

    Args:
        status: what the worker published (:meth:`Worker.status`).
        loop_age_s: seconds since the loop last polled (its heartbeat).
        status_age_s: seconds since ``status`` was published (0 in the worker itself).
        uptime_s: seconds since the worker started.
        stall_s: the worker's ``health_stall_s``.
    """
    reason = status.get("broker_error")
    waits = reason is not None or bool(status.get("starting") or status.get("assigning"))
    explained = status_age_s <= stall_s and waits
    slow = loop_age_s > stall_s
    return {
        "worker_id": status.get("worker_id"),
        "ready": bool(status.get("ready")),
        "degraded": reason is not None or slow,
        "stalled": slow and not explained,
        "broker_error": reason,
        "since_last_poll_s": round(loop_age_s, 3),
        "status_age_s": round(status_age_s, 3),
        "active_partitions": status.get("active_partitions", []),
        "restoring_partitions": status.get("restoring_partitions", []),
        "standby_partitions": status.get("standby_partitions", []),
        "last_checkpoint_at": status.get("last_checkpoint_at"),
        "uptime_s": round(uptime_s, 1),
    }
