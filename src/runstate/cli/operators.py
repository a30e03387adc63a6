"""``runstate cancel``, ``retry-step``, ``resolve-action``: an operator un-sticks a run.

Each reads the run first and refuses, with nothing sent and exit code 1, when its state does
not allow the command (the reducer's own rules say why); each is one event in the run's
history naming the acting principal (:mod:`runstate.cli.principals`), who needs the
``operator`` (or ``admin``) role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from runstate.agents.client import HttpRunStateReader
from runstate.agents.operators import CommandReceipt
from runstate.agents.operators import cancel as cancel_run
from runstate.agents.operators import resolve_action as resolve_run_action
from runstate.agents.operators import retry_step as retry_run_step
from runstate.cli.approvals import Url, cli_reader
from runstate.cli.principals import By, acting_principal
from runstate.crypto import cipher_from_settings
from runstate.identity import Principal
from runstate.settings import load_settings
from runstate.streams.clients import require_reachable
from runstate.streams.producer import EventProducer

RunId = Annotated[str, typer.Argument(help="the run's id")]
Reason = Annotated[str | None, typer.Option("--reason", help="why (kept in the run's history)")]


def cancel(
    run_id: RunId,
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the run's history)")],
    by: By = None,
    url: Url = None,
) -> None:
    """Cancel a run that has not ended, or close a failed run nobody will retry."""
    _run(lambda p, r, who: cancel_run(p, r, run_id, by=who, reason=reason), by, url)


def retry_step(
    run_id: RunId,
    step: Annotated[
        str | None, typer.Argument(help="the step to retry [default: where the run stopped]")
    ] = None,
    reason: Reason = None,
    by: By = None,
    url: Url = None,
) -> None:
    """Give a failed run's step one more attempt: the run is in progress again at that step
    (earlier steps keep their outputs); drive the agent again to run it."""
    _run(lambda p, r, who: retry_run_step(p, r, run_id, by=who, step=step, reason=reason), by, url)


def resolve_action(
    run_id: RunId,
    key: Annotated[str, typer.Argument(help="the action's idempotency key")],
    found: Annotated[
        str | None,
        typer.Option(
            "--found",
            metavar="EXTERNAL_ID",
            help="the external system has the action, under this id: recorded, not called again",
        ),
    ] = None,
    not_found: Annotated[
        bool,
        typer.Option("--not-found", help="the external system has no such action: may be called"),
    ] = False,
    reason: Reason = None,
    by: By = None,
    url: Url = None,
) -> None:
    """Settle an external action whose outcome is unknown (see `runs list --unknown-actions`);
    a run that failed only for it goes on at its step."""
    if (found is None) == (not not_found):
        raise typer.BadParameter("give exactly one of --found EXTERNAL_ID or --not-found")
    _run(
        lambda p, r, who: resolve_run_action(
            p, r, run_id, key, by=who, external_id=found, reason=reason
        ),
        by,
        url,
    )


Command = Callable[[EventProducer, HttpRunStateReader, Principal], CommandReceipt]


def _run(command: Command, by: str | None, url: str | None) -> None:
    s = load_settings()
    require_reachable(s.bootstrap_servers)  # first: with Kafka down, one line and exit 3
    who = acting_principal(by)
    with EventProducer(s, producer_name="runstate-cli", sealer=cipher_from_settings(s)) as producer:
        receipt = command(producer, cli_reader(producer, url), who)
    d = receipt.delivery
    typer.echo(
        f"run {receipt.run_id}: {receipt.event.event_type} by {who.name}, event at"
        f" {d.topic}[{d.partition}]@{d.offset}; run is now {receipt.state.status.value}"
        + (f" at step {receipt.state.current_step}" if receipt.state.current_step else "")
    )
