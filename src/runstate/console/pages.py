"""The console's pages (GET): my approvals, runs, one run, dead letters.

Each reads the query API as the signed-in user (:mod:`runstate.console.api`) and shows
personal fields masked as :mod:`runstate.console.viewer` says. A page that cannot reach the
API says so in one line instead of failing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from runstate.console.api import Refused
from runstate.console.app import CONSOLE, PRINCIPAL, TOKEN, csrf_of
from runstate.console.dead_letters import newest_dead_letters
from runstate.console.timeline import journal_moments, timeline
from runstate.console.viewer import is_asked, masked_run, may_decide, may_operate
from runstate.console.views import render
from runstate.errors import Error
from runstate.runs.run_view import RunFilter
from runstate.runs.state import RunStatus, StepPhase

__all__ = ["approvals_page", "register", "run_page", "runs_page"]

#: Most approvals one queue lists (per approver name or group asked).
QUEUE_LIMIT = 500
#: Runs per page of the runs list.
RUNS_PAGE = 50
#: The most runs one page may ask for (``?limit=``).
RUNS_PAGE_MAX = 200
#: Newest dead letters shown per partition.
DEAD_LETTERS_LIMIT = 50
#: Events per page of a run's timeline.
EVENTS_PAGE = 50

#: What a successful command's redirect says (keyed, never reflected from the URL).
NOTICES = {
    "approve": "Approved; the run goes on.",
    "reject": "Rejected; the agent sees your reason.",
    "cancel": "Cancelled.",
    "retry-step": "The step gets one more attempt.",
    "resolve-action": "The action is settled.",
}


def register(app: web.Application) -> None:
    app.router.add_get("/", approvals_page)
    app.router.add_get("/runs", runs_page)
    app.router.add_get("/runs/{run_id}", run_page)
    app.router.add_get("/dead-letters", dead_letters_page)


def _page(request: web.Request, template: str, *, status: int = 200, **ctx: Any) -> web.Response:
    console = request.app[CONSOLE]
    return render(
        console.templates,
        template,
        status=status,
        principal=request[PRINCIPAL],
        csrf=csrf_of(request),
        refresh_s=console.config.refresh_s,
        **ctx,
    )


async def approvals_page(request: web.Request) -> web.StreamResponse:
    """Runs waiting for the signed-in principal's decision (or everyone's, for admins with
    ``?all=1``), overdue first, then by due time."""
    console, who = request.app[CONSOLE], request[PRINCIPAL]
    show_all = who.is_admin and request.query.get("all") == "1"
    asked = [None] if show_all else [who.name, *sorted(who.groups)]
    error = None
    runs: dict[str, dict[str, Any]] = {}
    try:
        pages = await asyncio.gather(
            *(
                console.api.all_runs(
                    request[TOKEN],
                    RunFilter.of(status=RunStatus.WAITING_APPROVAL, approver=a),
                    limit=QUEUE_LIMIT,
                )
                for a in asked
            )
        )
        for page in pages:
            runs.update(
                {r["run_id"]: r for r in page["runs"] if show_all or is_asked(who, r["approval"])}
            )
        missing = sorted({p for page in pages for p in page.get("missing_partitions", [])})
        if missing:
            error = f"incomplete: partitions {missing} had no worker to answer (rebalancing?)"
    except Error as exc:
        error = str(exc)
    queue = sorted(
        (masked_run(r, who) for r in runs.values()),
        key=lambda r: ((r.get("approval") or {}).get("due_at") or "", r["run_id"]),
    )
    return _page(
        request,
        "approvals.html",
        queue=queue,
        show_all=show_all,
        error=error,
        may_decide={r["run_id"]: may_decide(who, runs[r["run_id"]]) for r in queue},
    )


_FILTERS = ("status", "owner", "approver", "step", "phase", "idle_for")
_FLAGS = ("needs_attention", "overdue", "unknown_actions")


async def runs_page(request: web.Request) -> web.StreamResponse:
    """Runs by the API's filters, a page at a time (``after`` is the API's cursor)."""
    console, who = request.app[CONSOLE], request[PRINCIPAL]
    q = request.query
    values = {k: q.get(k, "").strip() for k in _FILTERS}
    flags = {k: q.get(k) == "1" for k in _FLAGS}
    ctx: dict[str, Any] = {
        "values": values,
        "flags": flags,
        "limit": _page_size(q.get("limit")),
        "statuses": [s.value for s in RunStatus],
        "phases": [p.value for p in StepPhase],
        "runs": [],
        "next": None,
        "complete": True,
        "error": None,
    }
    try:
        flt = RunFilter.of(**values, **flags)  # type: ignore[arg-type]
    except ValueError as exc:
        return _page(request, "runs.html", status=400, **{**ctx, "error": str(exc)})
    try:
        body = await console.api.runs(
            request[TOKEN], flt, limit=ctx["limit"], after=q.get("after") or None
        )
    except Error as exc:
        return _page(request, "runs.html", status=502, **{**ctx, "error": str(exc)})
    ctx.update(
        runs=[masked_run(r, who) for r in body["runs"]],
        next=body.get("next"),
        complete=body.get("complete", True),
        missing=body.get("missing_partitions", []),
    )
    return _page(request, "runs.html", **ctx)


def _page_size(text: str | None) -> int:
    try:
        return min(max(int(text or RUNS_PAGE), 1), RUNS_PAGE_MAX)
    except ValueError:
        return RUNS_PAGE


async def run_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    """One run: state, timeline, actions, failures, model calls, and the buttons the
    principal's roles allow. A refused command shows this page with the API's message."""
    console, who = request.app[CONSOLE], request[PRINCIPAL]
    run_id = request.match_info["run_id"]
    try:
        run = await console.api.run(request[TOKEN], run_id)
    except Refused as exc:
        return _page(request, "run.html", status=exc.status, run=None, run_id=run_id,
                     error=exc.message, notice=None)  # fmt: skip
    except Error as exc:
        return _page(request, "run.html", status=502, run=None, run_id=run_id,
                     error=str(exc), notice=None)  # fmt: skip
    shown = masked_run(run, who)
    after = request.query.get("after") or None
    journal_error = None
    try:
        page = await console.api.run_events(request[TOKEN], run_id, after=after, limit=EVENTS_PAGE)
        moments, following = journal_moments(page["events"]), page.get("next")
    except Error as exc:  # the state still shows; say why the events do not
        moments, following, journal_error = [], None, str(exc)
    if not moments and after is None:
        moments = timeline(shown)  # no journal (a run older than it): what the state keeps
    return _page(
        request,
        "run.html",
        status=status,
        run=shown,
        run_id=run_id,
        error=error,
        notice=NOTICES.get(request.query.get("done", "")) if error is None else None,
        moments=moments,
        events_after=after,
        events_next=following,
        journal_error=journal_error,
        may_decide=may_decide(who, run),
        may_operate=may_operate(who) and not (run["is_terminal"] and run["status"] != "failed"),
        unknown_actions=[a for a in shown.get("external_actions", []) if a["state"] == "intended"],
    )


async def dead_letters_page(request: web.Request) -> web.StreamResponse:
    """The newest dead letters: reason, class, detail, original topic/partition/offset."""
    console = request.app[CONSOLE]
    cfg = console.config
    try:
        letters = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: newest_dead_letters(
                cfg.bootstrap_servers, cfg.dead_letter_topic, limit=DEAD_LETTERS_LIMIT
            ),
        )
        error = None
    except (Error, TimeoutError) as exc:
        letters, error = [], str(exc)
    return _page(request, "dead_letters.html", letters=letters, error=error,
                 per_partition=DEAD_LETTERS_LIMIT)  # fmt: skip
