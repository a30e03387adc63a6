"""``runstate estimate``: storage per tier per day, month and year, from policy and workload."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from runstate.cli.options import policy_option
from runstate.cli.output import stdout_console


def _size(n: float) -> str:
    if math.isinf(n):
        return "unbounded"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return f"{n:,.1f} PiB"  # pragma: no cover


def estimate(
    runs_per_day: Annotated[float, typer.Option(help="new runs per day", min=0)],
    events_per_run: Annotated[float, typer.Option(help="events per run", min=0)],
    avg_event_bytes: Annotated[
        float | None, typer.Option(help="mean event size [measured, else 350]")
    ] = None,
    avg_state_bytes: Annotated[
        float | None, typer.Option(help="mean encoded run state [else a formula]")
    ] = None,
    replication_factor: Annotated[int, typer.Option(help="Kafka copies of each topic")] = 1,
    policy: Annotated[
        Path | None,
        policy_option("retention policy (hot window, archive retention)"),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", help="measure event, state and archive sizes on this cluster"),
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option("--topic-prefix", help="prefix of every topic name")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
) -> None:
    """Estimate storage per tier (Kafka hot, changelog, archive) per day, month and year.

    With --bootstrap and data in the topics, the mean event and state sizes are measured, and
    the archive's bytes per event come from its manifests.
    """
    from runstate.retention.context import load_context
    from runstate.retention.estimate import (
        DEFAULT_EVENT_BYTES,
        HORIZONS,
        Measurement,
        Workload,
        estimate_storage,
        measure,
        total_after,
    )
    from runstate.retention.kafka_log import ConfluentKafkaLog
    from runstate.settings import load_settings
    from runstate.streams.clients import require_reachable
    from runstate.streams.topics import TopicNames

    measured: Measurement = Measurement()
    notes: list[str] = []
    if policy is not None:
        context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
        names, rules = context.names, context.policy
        archived = names.events in rules.topics and rules.topics[names.events].archived
    else:
        names = TopicNames(topic_prefix or load_settings().topic_prefix)
        rules, archived = None, False
    if bootstrap is not None:
        require_reachable(bootstrap)
        store = context.store(names.events) if archived else None
        measured, notes = measure(ConfluentKafkaLog(bootstrap, timeout_s=5.0), names, store)
    event_bytes = avg_event_bytes or measured.avg_event_bytes
    workload = Workload(
        runs_per_day=runs_per_day,
        events_per_run=events_per_run,
        avg_event_bytes=event_bytes if event_bytes is not None else DEFAULT_EVENT_BYTES,
        archive_bytes_per_event=(
            measured.compression_ratio * event_bytes
            if measured.compression_ratio is not None and event_bytes is not None
            else measured.archive_bytes_per_event
        ),
        avg_state_bytes=avg_state_bytes,
        avg_summary_bytes=measured.avg_summary_bytes,
        replication_factor=replication_factor,
    )
    tiers = estimate_storage(workload, rules, names)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "workload": {
                        "runs_per_day": runs_per_day,
                        "events_per_run": events_per_run,
                        "avg_event_bytes": workload.avg_event_bytes,
                        "archive_bytes_per_event": workload.archived_event_bytes,
                        "avg_state_bytes": workload.state_bytes,
                        "avg_summary_bytes": workload.summary_bytes,
                        "replication_factor": replication_factor,
                    },
                    "notes": notes,
                    "measured": {
                        "avg_event_bytes": measured.avg_event_bytes,
                        "sampled_events": measured.sampled_events,
                        "archive_bytes_per_event": measured.archive_bytes_per_event,
                        "archived_records": measured.archived_records,
                        "compression_ratio": measured.compression_ratio,
                        "avg_summary_bytes": measured.avg_summary_bytes,
                    },
                    "tiers": [
                        {
                            "tier": t.tier,
                            "bytes_per_day": t.daily_bytes,
                            "kept_days": None if t.kept is None else t.kept.total_seconds() / 86400,
                            **{f"held_after_{name}": t.held_after(days) for name, days in HORIZONS},
                            "note": t.note,
                        }
                        for t in tiers
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"{runs_per_day:,.0f} runs/day x {events_per_run:,.0f} events/run")
    for column in ("tier", "per day", *(f"after a {n}" for n, _ in HORIZONS), "levels off at"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    for number, t in enumerate(tiers, 1):
        table.add_row(
            f"{t.tier} [{number}]",
            _size(t.daily_bytes),
            *(_size(t.held_after(days)) for _, days in HORIZONS),
            _size(t.steady_bytes),
        )
    table.add_row(
        "total",
        _size(sum(t.daily_bytes for t in tiers)),
        *(_size(total_after(tiers, days)) for _, days in HORIZONS),
        "",
    )
    console = stdout_console()
    console.print(table)
    for number, t in enumerate(tiers, 1):
        console.print(f"[{number}] {t.note}")
    for note in notes:
        console.print(f"note: {note}")
    event_how = (
        f"measured over {measured.sampled_events} events"
        if measured.avg_event_bytes and not avg_event_bytes
        else "given"
        if avg_event_bytes
        else "assumed"
    )
    archive_how = (
        f"measured over {measured.archived_records} archived records"
        if measured.archive_bytes_per_event
        else "assumed ratio"
    )
    summary_how = "measured" if measured.avg_summary_bytes else "assumed"
    console.print(
        f"event {workload.avg_event_bytes:,.0f} B ({event_how}); archived"
        f" {workload.archived_event_bytes:,.0f} B/event ({archive_how}); state"
        f" {workload.state_bytes:,.0f} B ({'given' if avg_state_bytes else 'formula'});"
        f" summary {workload.summary_bytes:,.0f} B ({summary_how})"
    )
