"""``runstate replay``: rebuild run state from the archive and Kafka (compliance replay)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from runstate.cli.options import policy_option
from runstate.cli.output import stdout_console

if TYPE_CHECKING:
    from runstate.retention.audit import Timeline
    from runstate.retention.replay import ReplayResult


class _RateBar:
    """A rich progress bar as a replay ``ProgressSink``: count, events/s and time left.

    The rate is kept as a task field because rich's own ``speed`` is None until it has two
    samples, which would print "None" in the column.
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def total(self, records: int) -> None:
        self._task = self._progress.add_task("replaying", total=records, rate="")

    def advance(self, records: int) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, records)
        speed = next(t.speed for t in self._progress.tasks if t.id == self._task)
        if speed:
            self._progress.update(self._task, rate=f"{speed:,.0f} events/s")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _parse_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO-8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _stats_line(result: ReplayResult) -> str:
    s = result.stats
    return (
        f"replayed {s.records} records ({s.archive_records} from the archive, {s.kafka_records}"
        f" from Kafka) in {s.elapsed_s:.1f}s, {s.events_per_s:,.0f} events/s: {s.applied} applied,"
        f" {s.duplicates} duplicates, {s.rejected} rejected, {_set_aside(s.set_aside)};"
        f" {len(result.states)} runs"
    )


def _set_aside(counts: Mapping[str, int]) -> str:
    if not counts:
        return "0 set aside"
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    return f"{sum(counts.values())} set aside as the processor dead-letters them ({reasons})"


def _print_timeline(run_id: str, timeline: Timeline, console: Console) -> None:
    table = Table(title=f"history of {run_id}")
    for column in ("when", "event", "who", "what", "outcome", "status", "where"):
        table.add_column(column)
    for e in timeline.entries:
        table.add_row(
            e.occurred_at.isoformat(timespec="seconds"),
            e.event_type,
            e.actor,
            e.detail,
            e.outcome,
            e.status or "",
            f"{e.origin} {e.partition}@{e.offset}",
        )
    console.print(table)


def replay(
    policy: Annotated[
        Path,
        policy_option("retention policy YAML file (names the archive)"),
    ],
    run: Annotated[str | None, typer.Option("--run", help="replay this run only")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="replay every run")] = False,
    at: Annotated[
        str | None, typer.Option("--at", help="state as of this ISO-8601 time (UTC if naive)")
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="with --run: the run's full timeline")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="with --all: compare with the live latest-state topic; exit 1 on any mismatch",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not tables")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="with --all: write the states here")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option("--topic-prefix", help="prefix of every topic name")
    ] = None,
) -> None:
    """Rebuild state from the archive, then Kafka, with the live reducer.

    `--run R [--at T] [--history]` prints one run's state (and timeline); `--all [--at T]`
    every run's; `--all --verify` compares with the live state and lists every mismatch.
    Personal fields are opened with the master key (RUNSTATE_MASTER_KEY[_FILE]) when it is
    set, shown as "masked" when not, and as "erased" once their subject was erased.
    """
    from runstate.crypto import cipher_from_settings, reveal, shown_value
    from runstate.retention.audit import Timeline, compare_states, read_live_summaries
    from runstate.retention.context import load_context
    from runstate.retention.kafka_log import ConfluentKafkaLog
    from runstate.retention.replay import HistorySource, replay_all
    from runstate.runs.run_view import run_to_json
    from runstate.settings import load_settings
    from runstate.streams.clients import require_reachable

    if (run is None) == (not all_runs):
        raise typer.BadParameter("give exactly one of --run RUN_ID and --all")
    if history and run is None:
        raise typer.BadParameter("--history needs --run")
    if verify and (not all_runs or at is not None):
        raise typer.BadParameter("--verify needs --all and compares the current state (no --at)")
    when = _parse_at(at)
    err = Console(stderr=True)
    context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    require_reachable(context.bootstrap_servers)
    topic = context.names.events
    source = HistorySource(
        context.store(topic),
        ConfluentKafkaLog(context.bootstrap_servers),
        context.bootstrap_servers,
        topic,
        context.event_codec(),
        max_event_bytes=context.max_event_bytes,
    )
    cipher = cipher_from_settings(
        load_settings(),
        bootstrap_servers=context.bootstrap_servers,
        topic_prefix=context.names.prefix,
        cached=True,  # a mirror of the data-keys topic in the key cache folder
    )
    try:
        opener = shown_value(cipher, allowed=True)
        timeline = Timeline(opener=opener) if history else None
        observe = timeline.observe if timeline is not None else None
        if no_progress or as_json or not err.is_terminal:
            result = replay_all(source, at=when, run_id=run, observe=observe)
        else:
            with _progress(err) as bar:
                result = replay_all(
                    source, at=when, run_id=run, observe=observe, progress=_RateBar(bar)
                )
        err.print(_stats_line(result))
        for span in result.spans.values():
            if span.expired:
                err.print(
                    f"[yellow]partition {span.partition}: offsets {span.expired} expired"
                    " under the retention policy; runs there are incomplete[/yellow]"
                )
            if span.held:
                err.print(
                    f"partition {span.partition}: offsets {span.held} read from hold segments"
                    " (only runs under legal hold kept there)"
                )
        for problem in result.problems[:5]:
            err.print(f"[yellow]set aside[/yellow]: {problem}")
        if verify:
            live = read_live_summaries(context.bootstrap_servers, context.names.latest_state)
            mismatches = compare_states(
                result.states,
                live,
                rules=context.topic_policy(topic),
                ends={p: s.kafka_end for p, s in result.spans.items()},
                partitions=result.partitions,
            )
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "runs_replayed": len(result.states),
                            "runs_live": len(live),
                            "mismatches": [str(m) for m in mismatches],
                        },
                        indent=2,
                    )
                )
            else:
                for m in mismatches:
                    typer.echo(str(m))
                kinds = Counter(m.kind for m in mismatches)
                err.print(
                    f"{len(result.states)} runs replayed, {len(live)} live:"
                    f" {len(mismatches)} mismatches {dict(kinds) or ''}"
                )
            if mismatches:
                raise typer.Exit(1)
            return

        if run is not None:
            state = result.states.get(run)
            body: Any = reveal(run_to_json(state), opener) if state is not None else None
            if timeline is not None and not as_json:
                _print_timeline(run, timeline, stdout_console())
            elif timeline is not None:
                body = {"state": body, "timeline": [e.as_json() for e in timeline.entries]}
            typer.echo(json.dumps(body, indent=2, sort_keys=True))
            if state is None:
                err.print(f"run {run!r} has no state at {at or 'the end'}")
                raise typer.Exit(1)
            return
        states = {
            run_id: reveal(run_to_json(s), opener) for run_id, s in sorted(result.states.items())
        }
        if output is not None:
            output.write_text(json.dumps(states, sort_keys=True) + "\n")
            err.print(f"wrote {len(states)} run states to {output}")
        else:
            json.dump(states, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
    finally:
        if cipher is not None:
            cipher.store.close()
