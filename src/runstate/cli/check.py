"""``runstate check``: the five launch checks against a running deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from runstate.cli.options import policy_option
from runstate.cli.output import stdout_console
from runstate.errors import ConfigError

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}


def check(
    policy: Annotated[
        Path | None,
        policy_option("retention policy: personal-data tags, archive, hot windows"),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
    ] = None,
    query_url: Annotated[
        str | None,
        typer.Option("--query-url", help="a processor worker's query API [RUNSTATE_QUERY_URL]"),
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option("--topic-prefix", help="prefix of every topic name [RUNSTATE_*]")
    ] = None,
    log: Annotated[
        list[Path] | None,
        typer.Option(
            "--log",
            help="also search this file for personal data (repeatable)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    runs_per_day: Annotated[
        float, typer.Option(help="workload for the volume estimate", min=0)
    ] = 1000.0,
    events_per_run: Annotated[
        float | None,
        typer.Option(help="events per run [default: the synthetic run's count]", min=0),
    ] = None,
    replication_factor: Annotated[
        int | None, typer.Option(help="Kafka copies [RUNSTATE_REPLICATION_FACTOR]", min=1)
    ] = None,
    visibility_limit: Annotated[
        float, typer.Option(help="seconds within which a waiting approval must show")
    ] = 10.0,
    archive_wait: Annotated[
        float, typer.Option(help="seconds to wait for the archiver to archive the run")
    ] = 30.0,
    archive_scope: Annotated[
        str,
        typer.Option(
            help="archive segments check 4 decodes and searches: run (those holding the"
            " synthetic run) or all (every live segment; reads the whole archive)"
        ),
    ] = "run",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
) -> None:
    """Run the five launch checks with a synthetic run (id check-...); exit 1 if any fails.

    1 kill the agent mid-step and restart it; 2 wait for an approval and see who sees it;
    3 run the same step twice; 4 find the run's fake personal data in topics and logs, and any
    e-mail, phone number or fake data in clear in any archived field, tagged or not; 5 estimate
    storage per tier. The run's events stay in the log, marked by their
    run id and agent (runstate-check).
    """
    from runstate.checks import LaunchCheckConfig, run_launch_checks
    from runstate.retention.policy import load_policy
    from runstate.settings import load_settings
    from runstate.streams.topics import TopicNames

    err = Console(stderr=True)
    s = load_settings()
    config = LaunchCheckConfig(
        bootstrap_servers=bootstrap or s.bootstrap_servers,
        names=TopicNames(topic_prefix or s.topic_prefix),
        query_url=query_url or s.query_url,
        policy=load_policy(policy) if policy is not None else None,
        log_files=tuple(log or ()),
        runs_per_day=runs_per_day,
        events_per_run=events_per_run,
        replication_factor=replication_factor or s.replication_factor,
        visibility_limit_s=visibility_limit,
        archive_wait_s=archive_wait,
        archive_scope=_scope(archive_scope),
    )
    report = run_launch_checks(
        config, progress=None if as_json else lambda text: err.print(f"[dim]{text}[/dim]")
    )
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2, default=str))
    else:
        _print(report.as_json())
    if not report.ok:
        raise typer.Exit(1)


def _scope(text: str) -> Literal["run", "all"]:
    if text == "run":
        return "run"
    if text == "all":
        return "all"
    raise ConfigError(f"--archive-scope {text!r}: use run or all")


def _print(body: dict[str, object]) -> None:
    from runstate.checks.volume import format_bytes

    console = stdout_console()
    table = Table(title=f"launch checks, synthetic run {body['run_id']}", show_lines=True)
    table.add_column("check")
    table.add_column("result")
    table.add_column("evidence", overflow="fold")
    checks = body["checks"]
    assert isinstance(checks, list)
    for c in checks:
        result = c["result"]
        evidence = str(c["evidence"]).replace("; ", "\n")
        table.add_row(f"{c['check']} {c['name']}", f"[{_STYLE[result]}]{result}[/]", evidence)
    console.print(table)
    tiers = next((c["details"].get("tiers") for c in checks if c["check"] == 5), None)
    if tiers:
        sizes = Table(title="storage per tier")
        for column in ("tier", "per day", "after a day", "after a month", "after a year"):
            sizes.add_column(column, justify="left" if column == "tier" else "right")
        for t in tiers:
            sizes.add_row(
                t["tier"],
                format_bytes(t["bytes_per_day"]),
                *(format_bytes(t[f"held_after_{n}"]) for n in ("day", "month", "year")),
            )
        console.print(sizes)
