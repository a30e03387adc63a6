"""Approval deadlines on the runtime: due approvals from the due-time index, nothing scanned.

Each tick reads, per owned partition, only the entries of the due-time index up to now
(:func:`~runstate.runs.run_index.due_approvals`), so its cost follows the number of overdue
approvals, not the number of runs held, and an assignment needs no rebuild: the index is in
the restored store. The ``ApprovalExpired`` it makes is a processor-made event, produced into
the events topic inside the checkpoint's transaction; its event id is derived from the
approval, so a copy (the old and the new owner around a rebalance, or a re-send) is a
duplicate the reducer ignores.

An expiry stays "sent" until it is applied (the approval leaves the index) or ``resend_s``
passed, so a tick does not send it again every interval while the transaction and the
reducer catch up; after ``resend_s`` it is sent again in case the first one was lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

from runstate.runs.deadlines import Deadline, expiry_event
from runstate.runs.keyspace import KeyValueReader
from runstate.runs.run_index import due_approvals
from runstate.schemas.events import ApprovalExpired

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """Which expiries to send now, for the partitions a worker owns.

    Args:
        reader: The committed store of an owned partition, or None if not owned now.
        producer: Written into every expiry event (``producer`` field).
        resend_s: Send an expiry again if its approval is still pending this long after.
        limit: At most this many expiries per tick (the rest come next tick).
    """

    def __init__(
        self,
        reader: Callable[[int], KeyValueReader | None],
        *,
        producer: str,
        resend_s: float = 30.0,
        limit: int = 1000,
    ) -> None:
        self._reader = reader
        self._producer = producer
        self._resend_s = resend_s
        self._limit = limit
        self._sent: dict[tuple[str, datetime], float] = {}

    def due(
        self, partitions: Iterable[int], now: datetime, *, clock: float | None = None
    ) -> list[tuple[int, ApprovalExpired]]:
        """The expiries to produce now, each with its run's partition (and remember them as
        sent)."""
        mono = time.monotonic() if clock is None else clock
        out: list[tuple[int, ApprovalExpired]] = []
        still_due: set[tuple[str, datetime]] = set()
        for partition in sorted(partitions):
            reader = self._reader(partition)
            if reader is None:
                continue
            for deadline in due_approvals(reader, now, partition=partition):
                key = (deadline.run_id, deadline.due_at)
                still_due.add(key)
                if len(out) >= self._limit or not self._should_send(key, mono):
                    continue
                out.append((partition, self._expiry(deadline, now)))
                self._sent[key] = mono
        # An approval no longer due (decided, expired, moved away) is forgotten.
        self._sent = {k: v for k, v in self._sent.items() if k in still_due}
        return out

    def _should_send(self, key: tuple[str, datetime], mono: float) -> bool:
        sent = self._sent.get(key)
        return sent is None or mono - sent >= self._resend_s

    def _expiry(self, deadline: Deadline, now: datetime) -> ApprovalExpired:
        return expiry_event(deadline, now=now, producer=self._producer)
