"""``runstate retention``: what retention would delete (plan), and deleting it (apply)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from runstate.cli.options import policy_option
from runstate.cli.output import stdout_console
from runstate.cli.progress import progress_bar, progress_console

if TYPE_CHECKING:
    from runstate.retention.apply import RetentionPlan

app = typer.Typer(
    help="Trim Kafka up to the archive and expire archive segments, per the policy.",
    no_args_is_help=True,
)

PolicyOption = Annotated[Path, policy_option("retention policy YAML file")]
TopicOption = Annotated[
    list[str] | None, typer.Option("--topic", help="only this topic (repeatable) [all in policy]")
]
BootstrapOption = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
]
PrefixOption = Annotated[
    str | None, typer.Option("--topic-prefix", help="prefix of every topic name [RUNSTATE_*]")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON, not tables")]


def _plan_json(plan: RetentionPlan) -> dict[str, Any]:
    return {
        "now": plan.now.isoformat(),
        "kafka": [
            {
                "topic": t.plan.topic,
                "partition": t.plan.partition,
                "earliest_offset": t.plan.earliest_offset,
                "end_offset": t.end_offset,
                "archived_watermark": t.archived_watermark,
                "trim_to": t.plan.trim_to,
                "offsets": t.plan.deletes,
                "estimated_bytes": t.estimated_bytes,
                "reason": t.plan.reason,
            }
            for t in plan.trims
        ],
        "archive": [
            {
                "topic": e.topic,
                "partition": e.partition,
                "expire": [m.stem for m in e.expire],
                "records": sum(m.record_count for m in e.expire),
                "bytes": sum(m.size_bytes for m in e.expire),
                "held": [{"segment": h.manifest.stem, "reason": h.reason} for h in e.held],
                "split": [{"segment": h.manifest.stem, "reason": h.reason} for h in e.split],
            }
            for e in plan.expiries
        ],
        "totals": {
            "kafka_offsets": plan.offsets_to_trim,
            "kafka_bytes_estimated": plan.bytes_to_trim,
            "archive_segments": len(plan.segments_to_expire),
            "archive_segments_split": len(plan.segments_to_split),
            "archive_records": plan.records_to_expire,
            "archive_bytes": plan.bytes_to_expire,
        },
        "notes": list(plan.notes),
    }


def _print_plan(plan: RetentionPlan, console: Console) -> None:
    table = Table(title="Kafka: trim (DeleteRecords) up to min(hot window, archived watermark)")
    for column in (
        "topic",
        "p",
        "earliest",
        "end",
        "archived to",
        "trim to",
        "offsets",
        "≈bytes",
        "why",
    ):
        table.add_column(column, overflow="fold" if column == "topic" else "ellipsis")
    for t in plan.trims:
        table.add_row(
            t.plan.topic,
            str(t.plan.partition),
            str(t.plan.earliest_offset),
            str(t.end_offset),
            "-" if t.archived_watermark is None else str(t.archived_watermark),
            "-" if t.plan.trim_to is None else str(t.plan.trim_to),
            str(t.plan.deletes),
            "-" if t.estimated_bytes is None else str(t.estimated_bytes),
            t.plan.reason,
        )
    console.print(table)
    table = Table(title="Archive: segments past archive_retention")
    for column in ("topic", "p", "expire", "records", "bytes", "held runs kept", "held back"):
        table.add_column(column, overflow="fold" if column == "topic" else "ellipsis")
    for e in plan.expiries:
        if not e.expire and not e.held and not e.split:
            continue
        table.add_row(
            e.topic,
            str(e.partition),
            str(len(e.expire)),
            str(sum(m.record_count for m in e.expire)),
            str(sum(m.size_bytes for m in e.expire)),
            "\n".join(f"{h.manifest.stem}: {h.reason}" for h in e.split),
            "\n".join(f"{h.manifest.stem}: {h.reason}" for h in e.held),
        )
    console.print(table)
    console.print(
        f"total: {plan.offsets_to_trim} offsets (≈{plan.bytes_to_trim} bytes) from Kafka;"
        f" {len(plan.segments_to_expire)} segments, {plan.records_to_expire} records,"
        f" {plan.bytes_to_expire} bytes from the archive; {len(plan.segments_to_split)}"
        " segments expire but for their held runs' records"
    )
    for note in plan.notes:
        console.print(f"note: {note}")


def _make_plan(
    policy: Path, topic: list[str] | None, bootstrap: str | None, prefix: str | None
) -> tuple[Any, Any, RetentionPlan]:
    from runstate.retention.apply import plan_retention
    from runstate.retention.context import load_context
    from runstate.retention.kafka_log import ConfluentKafkaLog
    from runstate.streams.clients import require_reachable

    context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=prefix)
    require_reachable(context.bootstrap_servers)
    kafka = ConfluentKafkaLog(context.bootstrap_servers)
    return context, kafka, plan_retention(context, kafka, now=datetime.now(UTC), topics=topic)


@app.command()
def plan(
    policy: PolicyOption,
    topic: TopicOption = None,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Show what `apply` would trim from Kafka and delete from the archive (counts, bytes)."""
    _context, _kafka, retention_plan = _make_plan(policy, topic, bootstrap, topic_prefix)
    if as_json:
        typer.echo(json.dumps(_plan_json(retention_plan), indent=2))
    else:
        _print_plan(retention_plan, stdout_console())


@app.command()
def apply(
    policy: PolicyOption,
    topic: TopicOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    as_json: JsonOption = False,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Trim Kafka (never past the archived watermark) and expire archive segments
    (held runs' records kept in hold segments). Exit 1 if any trim was refused."""
    from runstate.retention.apply import apply_retention, retention_steps

    console = stdout_console()
    context, kafka, retention_plan = _make_plan(policy, topic, bootstrap, topic_prefix)
    if not as_json:
        _print_plan(retention_plan, console)
    if not yes and not typer.confirm("apply this plan?"):
        raise typer.Exit(1)
    steps = retention_steps(retention_plan)
    with progress_bar(
        "applying retention", total=steps, console=progress_console(as_json=as_json)
    ) as bar:
        outcome = apply_retention(
            context, kafka, retention_plan, on_step=lambda: bar.update(advance=1)
        )
    if as_json:
        body = _plan_json(retention_plan)
        body["applied"] = {
            "trimmed": [
                {"topic": t, "partition": p, "earliest_offset": low}
                for (t, p), low in sorted(outcome.trimmed.items())
            ],
            "expired": [m.segment_name for m in outcome.expired],
            "hold_segments": [m.segment_name for m in outcome.hold_segments],
            "refused": outcome.refused,
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        console.print(
            f"trimmed {len(outcome.trimmed)} partitions, expired {len(outcome.expired)} segments"
            f" ({len(outcome.hold_segments)} hold segments keep held runs' records)"
        )
        for reason in outcome.refused:
            console.print(f"[red]refused[/red]: {reason}")
    if not outcome.ok:
        raise typer.Exit(1)
