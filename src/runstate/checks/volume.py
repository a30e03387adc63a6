"""Check 5: storage per tier per day, month and year, from sizes measured on the deployment.

Sizes come from :func:`runstate.retention.estimate.measure` (a sample of the events and
latest-state topics, the archive's manifests); where the topic had nothing else to sample,
the synthetic run's own events are the measurement. Events per run default to the synthetic
run's count, which is small: pass your agents' real figure with ``--events-per-run``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from runstate.checks.deployment import CheckedDeployment
from runstate.checks.results import CheckResult, Verdict
from runstate.retention.estimate import (
    DEFAULT_EVENT_BYTES,
    HORIZONS,
    TierEstimate,
    Workload,
    estimate_storage,
    measure,
    total_after,
)
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.streams.reader import RawRecord

__all__ = ["estimate_volume", "format_bytes"]


def format_bytes(n: float) -> str:
    """``1.5 MiB``; ``unbounded`` for infinity."""
    if math.isinf(n):
        return "unbounded"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:,.0f} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} PiB"


def _payload(records: Sequence[RawRecord]) -> float | None:
    if not records:
        return None
    total = sum(
        len(r.key or b"") + len(r.value or b"") + sum(len(k) + len(v or b"") for k, v in r.headers)
        for r in records
    )
    return total / len(records)


def tier_rows(tiers: Sequence[TierEstimate]) -> list[dict[str, Any]]:
    """Per tier: bytes per day and held after a day, a month and a year (for JSON and tables)."""
    return [
        {
            "tier": t.tier,
            "bytes_per_day": t.daily_bytes,
            "kept_days": None if t.kept is None else t.kept.total_seconds() / 86400,
            **{f"held_after_{name}": t.held_after(days) for name, days in HORIZONS},
            "note": t.note,
        }
        for t in tiers
    ]


def estimate_volume(d: CheckedDeployment, run_id: str) -> CheckResult:
    """The estimate for the configured workload, with measured sizes."""
    name = "volume estimate"
    config = d.config
    own = d.run_records(d.names.events, run_id)
    store = d.archive(d.names.events)
    measured, notes = measure(ConfluentKafkaLog(d.bootstrap, timeout_s=10.0), d.names, store)
    event_bytes = measured.avg_event_bytes or _payload(own)
    per_run = config.events_per_run if config.events_per_run is not None else float(len(own))
    ratio = measured.compression_ratio
    workload = Workload(
        runs_per_day=config.runs_per_day,
        events_per_run=per_run,
        avg_event_bytes=event_bytes if event_bytes is not None else DEFAULT_EVENT_BYTES,
        archive_bytes_per_event=(
            ratio * event_bytes
            if ratio is not None and event_bytes is not None
            else measured.archive_bytes_per_event
        ),
        avg_summary_bytes=measured.avg_summary_bytes,
        replication_factor=config.replication_factor,
    )
    tiers = estimate_storage(workload, config.policy, d.names)
    rows = tier_rows(tiers)
    totals = {n: total_after(tiers, days) for n, days in HORIZONS}
    per_run_how = "given" if config.events_per_run is not None else "the synthetic run's count"
    evidence = (
        f"{config.runs_per_day:,.0f} runs/day x {per_run:,.0f} events/run ({per_run_how}),"
        f" {workload.avg_event_bytes:,.0f} B/event"
        f" ({'measured' if event_bytes is not None else 'assumed'}),"
        f" state {workload.state_bytes:,.0f} B (formula),"
        f" summary {workload.summary_bytes:,.0f} B"
        f" ({'measured' if measured.avg_summary_bytes else 'assumed'}): "
        + ", ".join(f"{format_bytes(v)} after a {n}" for n, v in totals.items())
        + " in all tiers"
    )
    details: dict[str, Any] = {
        "workload": {
            "runs_per_day": workload.runs_per_day,
            "events_per_run": workload.events_per_run,
            "avg_event_bytes": workload.avg_event_bytes,
            "archive_bytes_per_event": workload.archived_event_bytes,
            "avg_state_bytes": workload.state_bytes,
            "avg_summary_bytes": workload.summary_bytes,
            "replication_factor": workload.replication_factor,
        },
        "measured": {
            "avg_event_bytes": measured.avg_event_bytes,
            "sampled_events": measured.sampled_events,
            "synthetic_run_event_bytes": _payload(own),
            "archive_bytes_per_event": measured.archive_bytes_per_event,
            "archived_records": measured.archived_records,
            "avg_summary_bytes": measured.avg_summary_bytes,
        },
        "tiers": rows,
        "totals": totals,
        "notes": notes,
    }
    hot = tiers[0]
    if hot.kept is None:
        evidence += f"; {hot.tier} is never trimmed ({hot.note}): it grows without limit"
        return CheckResult(5, name, Verdict.WARN, evidence, details)
    return CheckResult(5, name, Verdict.PASS, evidence, details)
