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

    s = load_settings()
    token = None if s.token is None else s.token.get_secret_value()
    return QueryClient(url or s.query_url, token=token)


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


@app.command()
def events(
    run_id: Annotated[str, typer.Argument(help="the run's id")],
    after: Annotated[
        str | None, typer.Option(help="start after this cursor (the 'next' of a page)")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="events per page (the API's most: 1000)")
    ] = 100,
    all_pages: Annotated[
        bool, typer.Option("--all", help="follow the pages to the run's latest event")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
    url: Url = None,
) -> None:
    """Print a run's event journal, oldest first: what happened, who did it, what was set
    aside. Payloads, and runs that left the hot store: `runstate replay --run ID --history`.
    """
    client = _client(url)
    body = client.run_events(run_id, after=after, limit=limit)
    entries = list(body["events"])
    while all_pages and body.get("next"):
        body = client.run_events(run_id, after=body["next"], limit=limit)
        entries += body["events"]
    if as_json:
        typer.echo(json.dumps({**body, "events": entries, "count": len(entries)}, indent=2))
        return
    table = Table(title=f"{len(entries)} events of {run_id}")
    for column in ("offset", "at", "event", "step", "who", "outcome", "detail"):
        table.add_column(column, overflow="fold" if column == "detail" else "ellipsis")
    for e in entries:
        step = e.get("step") or ""
        if step and e.get("attempt"):
            step += f" #{e['attempt']}"
        table.add_row(
            str(e["offset"]),
            e["occurred_at"],
            e["event_type"],
            step,
            e.get("actor") or "",
            e["outcome"],
            e.get("detail") or "",
        )
    console = stdout_console()
    console.print(table)
    if body.get("next"):
        console.print(f"[yellow]more: --after {body['next']} (or --all)[/yellow]")


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
    needs_attention: Annotated[
        bool,
        typer.Option(
            "--needs-attention",
            help="only runs that need a person (failed: retry-step, resolve-action or cancel);"
            " the table says why and since when",
        ),
    ] = False,
    unknown_actions: Annotated[
        bool,
        typer.Option(
            "--unknown-actions",
            help="only failed runs with an external action of unknown outcome; the table"
            " names each action (settle it with resolve-action)",
        ),
    ] = False,
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
            needs_attention=needs_attention,
            unknown_actions=unknown_actions,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    body = _client(url).all_runs(flt, limit=limit)
    if as_json:
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    if needs_attention or unknown_actions:
        _print_attention(body, unknown_actions=unknown_actions)
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
    _print_table(table, body, limit)


def _print_table(table: Table, body: dict[str, Any], limit: int | None) -> None:
    console = stdout_console()
    console.print(table)
    if not body.get("complete", True):
        console.print(
            f"[yellow]incomplete: partitions {body['missing_partitions']} had no"
            " worker to answer (rebalancing?)[/yellow]"
        )
    elif body.get("next"):
        console.print(f"[yellow]more runs match than --limit {limit}[/yellow]")


def _print_attention(body: dict[str, Any], *, unknown_actions: bool) -> None:
    """Runs that need a person: why, and since when (the run's last change)."""
    what = "external actions of unknown outcome" if unknown_actions else "runs need a person"
    table = Table(title=f"{body['count']} {what}")
    columns = ("run_id", "owner", "agent", "step", "why", "since")
    if unknown_actions:
        columns = ("run_id", "owner", "step", "action (system)", "intended at", "since")
    for column in columns:
        table.add_column(column, overflow="fold" if column in ("run_id", "why") else "ellipsis")
    for run in body["runs"]:
        if unknown_actions:
            for action in run.get("external_actions", []):
                if action["state"] == "intended":
                    table.add_row(
                        run["run_id"],
                        run["owner"],
                        action["step"],
                        f"{action['idempotency_key']} ({action['system']})",
                        action["intended_at"],
                        run["updated_at"],
                    )
            continue
        table.add_row(
            run["run_id"],
            run["owner"],
            run["agent"],
            run.get("current_step") or "",
            _why(run),
            run["updated_at"],
        )
    _print_table(table, body, None)


def _why(run: dict[str, Any]) -> str:
    unknown = [a for a in run.get("external_actions", []) if a["state"] == "intended"]
    if unknown:
        keys = ", ".join(f"{a['idempotency_key']} ({a['system']})" for a in unknown)
        return f"outcome unknown: {keys}; resolve-action"
    reason = run.get("last_error_reason") or run["status"]
    message = run.get("last_error_message") or ""
    return f"{run['status']}: {reason}" + (f" - {message}" if message else "") + "; retry-step"
