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
) -> None:
    """Create missing topics; fail, naming each difference, if existing ones do not match."""
    s = load_settings()
    names = TopicNames(s.topic_prefix)
    specs = topic_specs(names, partitions=partitions or s.partitions)
    servers = bootstrap or s.bootstrap_servers
    require_reachable(servers)
    with broker_errors(servers):
        report = ensure_topics(
            admin_client(servers), specs, replication_factor=s.replication_factor
        )
    table = Table(Column("topic", overflow="fold"), "partitions", "cleanup", "purpose", "status")
    for spec in specs:
        word = "created" if spec.name in report.created else "ok"
        cleanup = spec.config.get("cleanup.policy", "delete")
        table.add_row(spec.name, str(spec.partitions), cleanup, spec.purpose, word)
    stdout_console().print(table)
