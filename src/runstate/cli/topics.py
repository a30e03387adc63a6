"""``runstate topics``: create and verify the topics the pipeline needs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

from runstate.cli.output import stdout_console
from runstate.settings import load_settings
from runstate.streams.clients import broker_errors, require_reachable
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

app = typer.Typer(help="Create and verify runstate's Kafka topics.", no_args_is_help=True)


@app.command()
def ensure(
    partitions: Annotated[
        int | None, typer.Option(help="partitions of the events topic [default: settings]")
    ] = None,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="change wrong configs of existing topics in place and report each change"
            " (a wrong partition count is never changed: that would re-key runs)",
        ),
    ] = False,
) -> None:
    """Create missing topics; verify every setting of existing ones that a promise depends on.

    Checked on existing topics: no time or size retention on the events, state-changes and
    dead-letter topics; compaction of the changelog, latest-state and schemas topics; the
    partition count (the changelog, latest-state and state-changes topics as many as the
    events topic); min.insync.replicas no higher than the replication factor. Each wrong
    setting is one line of the refusal (exit code 1); --fix changes the configs in place.
    min.insync.replicas=1 with more replicas is a warning on stderr, not changed.
    """
    s = load_settings()
    names = TopicNames(s.topic_prefix)
    specs = topic_specs(names, partitions=partitions or s.partitions)
    servers = bootstrap or s.bootstrap_servers
    require_reachable(servers)
    with broker_errors(servers):
        report = ensure_topics(
            admin_client(servers), specs, replication_factor=s.replication_factor, fix=fix
        )
    fixed_topics = {change.topic for change in report.fixed}
    table = Table(Column("topic", overflow="fold"), "partitions", "cleanup", "purpose", "status")
    for spec in specs:
        if spec.name in report.created:
            word = "created"
        else:
            word = "fixed" if spec.name in fixed_topics else "ok"
        cleanup = spec.config.get("cleanup.policy", "delete")
        table.add_row(spec.name, str(spec.partitions), cleanup, spec.purpose, word)
    stdout_console().print(table)
    for change in report.fixed:
        typer.echo(f"changed: {change}")
    for line in report.warnings:
        typer.echo(f"warning: {line}", err=True)


@app.command()
def acls(
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="create the ACLs on the cluster (as the admin principal of RUNSTATE_KAFKA_*)",
        ),
    ] = False,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
) -> None:
    """List the ACLs each role needs (docs/security.md); with --apply, create them.

    One principal per role: agent, processor, archiver, replay, console (User:<role>). Run
    --apply as a principal allowed to alter ACLs (a super user), after `topics ensure`.
    """
    from runstate.streams.acls import apply_grants, grants

    s = load_settings()
    names = TopicNames(s.topic_prefix)
    table = Table("principal", "resource", Column("name", overflow="fold"), "operation")
    for g in grants(names):
        name = f"{g.name}*" if g.prefixed else g.name
        table.add_row(g.principal, g.resource, name, g.operation)
    stdout_console().print(table)
    if apply:
        servers = bootstrap or s.bootstrap_servers
        require_reachable(servers)
        with broker_errors(servers):
            count = apply_grants(admin_client(servers), names)
        typer.echo(f"applied {count} ACLs for the topics of {names.prefix}")
