"""The ``runstate`` command line."""

from __future__ import annotations

import typer

from runstate.cli import broker, schemas, topics

app = typer.Typer(
    name="runstate",
    help="Durable state for AI agents, kept on Kafka.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(broker.app, name="broker")
app.add_typer(topics.app, name="topics")
app.add_typer(schemas.app, name="schemas")


def main() -> None:
    """Entry point of the ``runstate`` console script."""
    app()
