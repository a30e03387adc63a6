"""Watching table restoration from the changelog: how much, how fast, and when it ended.

faust itself restores a partition's RocksDB from the changelog topic whenever a worker
becomes its owner (start-up, rebalance, lost local state) and keeps standby copies up to
date the same way; this module only measures it, so an operator can tell a worker busy
restoring from a stuck one (``/metrics`` -> ``restore``).
"""

from __future__ import annotations

import time
from typing import Any

from runstate.processors.metrics import ProcessorMetrics

__all__ = ["RestoreWatch"]


class RestoreWatch:
    """Counts changelog records applied during recovery and times each recovery."""

    def __init__(self, metrics: ProcessorMetrics | None = None) -> None:
        self.metrics = metrics
        self.records = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.recoveries = 0
        self.last_rate: float | None = None
        self._since_last = 0
        self._started_at: float | None = None

    async def on_changelog_event(self, event: Any) -> None:
        """faust calls this for every changelog record it restores (active and standby)."""
        now = time.monotonic()
        if self._started_at is None:
            self._started_at = now
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.records += 1
        self._since_last += 1
        if self.metrics is not None:
            self.metrics.restored_records += 1

    async def on_recovered(self) -> None:
        """faust calls this when the table's recovery finished."""
        self.recoveries += 1
        if self._started_at is not None and self._since_last:
            elapsed = max(time.monotonic() - self._started_at, 1e-6)
            self.last_rate = self._since_last / elapsed
        self._since_last = 0
        self._started_at = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "recoveries": self.recoveries,
            "last_rate_records_per_s": None if self.last_rate is None else round(self.last_rate),
        }
