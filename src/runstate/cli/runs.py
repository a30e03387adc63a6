"""``runstate runs``: look at run state through any processor worker's query API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from runstate.errors import QueryError
from runstate.settings import load_settings

app = typer.Typer(help="Show and list runs (asks the processor's query API).", no_args_is_help=True)

Url = Annotated[
    str | None,
    typer.Option("--url", help="a processor worker's query API [default: RUNSTATE_QUERY_URL]"),
]


def _client(url: str | None) -> Any:
    from runstate.processors.query_client import QueryClient

    return QueryClient(url or load_settings().query_url)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="the run's id")],
    url: Url = None,
    min_partition: Annotated[
        int | None, typer.Option(help="wait until this partition is processed ...")
    ] = None,
    min_offset: Annotated[int | None, typer.Option(help="... up to this offset")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds to wait for that")] = None,
) -> None:
    """Print one run's state as JSON (exit 1 if unknown)."""
    try:
        body = _client(url).run(
            run_id, min_partition=min_partition, min_offset=min_offset, timeout_s=timeout
        )
    except QueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(body, indent=2, sort_keys=True))


@app.command(name="list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    owner: Annotated[str | None, typer.Option(help="only runs of this owner")] = None,
    approver: Annotated[str | None, typer.Option(help="only runs whose approval is theirs")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only approvals past due")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
    url: Url = None,
) -> None:
    """List runs across every worker of the processor group."""
    try:
        body = _client(url).runs(status=status, owner=owner, approver=approver, overdue=overdue)
    except QueryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    table = Table(title=f"{body['count']} runs")
    for column in ("run_id", "status", "owner", "agent", "step", "approver", "due", "updated"):
        table.add_column(column)
    for run in body["runs"]:
        approval = run.get("approval") or {}
        table.add_row(
            run["run_id"],
            run["status"],
            run["owner"],
            run["agent"],
            run.get("current_step") or "",
            approval.get("approver", ""),
            approval.get("due_at", ""),
            run["updated_at"],
        )
    console = Console()
    console.print(table)
    if not body.get("complete", True):
        console.print(
            f"[yellow]incomplete: partitions {body['missing_partitions']} had no"
            " worker to answer (rebalancing?)[/yellow]"
        )
