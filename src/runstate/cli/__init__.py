"""The ``runstate`` command line.

Each command group lives in its own module and is registered here on its own line. Every
command fails the same way (:mod:`runstate.cli.failures`): one ``error: ...`` line, exit
code 1 (failed), 2 (usage) or 3 (Kafka or the query API unreachable).
"""

from __future__ import annotations

import typer

from runstate.cli.failures import GuardedGroup

app = typer.Typer(
    name="runstate",
    cls=GuardedGroup,
    help="Durable state for AI agents, kept on Kafka. Exit codes: 0 ok, 1 failed or not ok,"
    " 2 usage, 3 Kafka or the query API unreachable.",
    no_args_is_help=True,
    add_completion=False,
)

from runstate.cli import broker as _broker  # noqa: E402

app.add_typer(_broker.app, name="broker")

from runstate.cli import topics as _topics  # noqa: E402

app.add_typer(_topics.app, name="topics")

from runstate.cli import schemas as _schemas  # noqa: E402

app.add_typer(_schemas.app, name="schemas")

from runstate.cli import demo as _demo  # noqa: E402

app.command(name="demo")(_demo.demo)

from runstate.cli import processor as _processor  # noqa: E402

app.add_typer(_processor.app, name="processor")

from runstate.cli import runs as _runs  # noqa: E402

app.add_typer(_runs.app, name="runs")

from runstate.cli import approvals as _approvals  # noqa: E402

app.command(name="approve")(_approvals.approve)
app.command(name="reject")(_approvals.reject)

from runstate.cli import operators as _operators  # noqa: E402

app.command(name="cancel")(_operators.cancel)
app.command(name="retry-step")(_operators.retry_step)
app.command(name="resolve-action")(_operators.resolve_action)

from runstate.cli import dead_letters as _dead_letters  # noqa: E402

app.add_typer(_dead_letters.app, name="dead-letters")

from runstate.cli import auth as _auth  # noqa: E402

app.add_typer(_auth.app, name="auth")

from runstate.cli import archive as _archive  # noqa: E402

app.add_typer(_archive.app, name="archive")

from runstate.cli import retention as _retention  # noqa: E402

app.add_typer(_retention.app, name="retention")

from runstate.cli import replay as _replay  # noqa: E402

app.command(name="replay")(_replay.replay)

from runstate.cli import erase as _erase  # noqa: E402

app.command(name="erase")(_erase.erase)

from runstate.cli import keys as _keys  # noqa: E402

app.add_typer(_keys.app, name="keys")

from runstate.cli import estimate as _estimate  # noqa: E402

app.command(name="estimate")(_estimate.estimate)

from runstate.cli import check as _check  # noqa: E402

app.command(name="check")(_check.check)

from runstate.cli import console as _console  # noqa: E402

app.command(name="console")(_console.console)


def main() -> None:
    """Entry point of the ``runstate`` console script."""
    app()
