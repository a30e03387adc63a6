"""Counters a worker exposes on ``/metrics``: what it applied, skipped and set aside."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProcessorMetrics"]


@dataclass
class ProcessorMetrics:
    """Plain counters; single event loop, so no locking.

    Attributes:
        outcomes: ``applied``, ``duplicate``, ``dead_letter`` counts.
        dead_letters: Dead letters by reason (``rs-reason``).
        duplicates: Duplicates by the reducer's ``why``.
        expiries_sent: ApprovalExpired events produced by the deadline timer.
    """

    worker_id: str
    started_at: float = field(default_factory=time.time)
    outcomes: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    expiries_sent: int = 0
    batches: int = 0
    restored_records: int = 0
    last_processed_at: float | None = None

    def processed(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.last_processed_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "worker_id": self.worker_id,
            "uptime_s": round(time.time() - self.started_at, 3),
            "outcomes": dict(self.outcomes),
            "dead_letters": dict(self.dead_letters),
            "dead_letters_total": sum(self.dead_letters.values()),
            "duplicates": dict(self.duplicates),
            "expiries_sent": self.expiries_sent,
            "batches": self.batches,
            "restored_records": self.restored_records,
            "last_processed_at": self.last_processed_at,
        }
