"""``runstate runs``: look at run state through any processor worker's query API."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from runstate.cli.output import stdout_console
from runstate.runs.run_view import RunFilter
from runstate.runs.state import StepPhase
from runstate.settings import load_settings

app = typer.Typer(help="Show and list runs (asks the processor's query API).", no_args_is_help=True)

Url = Annotated[
    str | None,
    typer.Option("--url", help="a processor worker's query API [default: RUNSTATE_QUERY_URL]"),
]


def _client(url: str | None) -> Any:
    from runstate.runs.query_client import QueryClient

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
    body = _client(url).run(
        run_id, min_partition=min_partition, min_offset=min_offset, timeout_s=timeout
    )
    typer.echo(json.dumps(body, indent=2, sort_keys=True))


_PHASES = ", ".join(p.value for p in StepPhase)


@app.command(name="list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    owner: Annotated[str | None, typer.Option(help="only runs of this owner")] = None,
    approver: Annotated[str | None, typer.Option(help="only runs whose approval is theirs")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="only approvals past due")] = False,
    step: Annotated[str | None, typer.Option(help="only runs whose current step is this")] = None,
    phase: Annotated[
        str | None,
        typer.Option(help=f"only runs whose current step is in this phase: {_PHASES}"),
    ] = None,
    idle_for: Annotated[
        str | None,
        typer.Option(
            help="only runs unchanged for at least this long, e.g. 90s, 15m, 2h, 1d, 1h30m:"
            " measured from the run's updated_at, the time (producer's clock) of the latest"
            " event applied to it (finished runs match too: add --status)"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="list at most this many runs (default: all)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
    url: Url = None,
) -> None:
    """List runs across every worker of the processor group (exit 2 on a bad filter value).

    Every given filter must hold. Stuck in approval for 4 hours:
    --status waiting_approval --idle-for 4h. Waiting for a retry: --phase retry_scheduled.
    """
    try:
        flt = RunFilter.of(
            status=status,
            owner=owner,
            approver=approver,
            overdue=overdue,
            step=step,
            phase=phase,
            idle_for=idle_for,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    body = _client(url).all_runs(flt, limit=limit)
    if as_json:
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    table = Table(title=f"{body['count']} runs")
    for column in ("run_id", "status", "owner", "agent", "step", "approver", "due", "updated"):
        table.add_column(column, overflow="fold" if column == "run_id" else "ellipsis")
    for run in body["runs"]:
        approval = run.get("approval") or {}
        step_text = run.get("current_step") or ""
        if step_text and run.get("step_phase"):
            step_text += f" ({run['step_phase']})"
        table.add_row(
            run["run_id"],
            run["status"],
            run["owner"],
            run["agent"],
            step_text,
            approval.get("approver", ""),
            approval.get("due_at", ""),
            run["updated_at"],
        )
    console = stdout_console()
    console.print(table)
    if not body.get("complete", True):
        console.print(
            f"[yellow]incomplete: partitions {body['missing_partitions']} had no"
            " worker to answer (rebalancing?)[/yellow]"
        )
    elif body.get("next"):
        console.print(f"[yellow]more runs match than --limit {limit}[/yellow]")
