"""The console's buttons (POST): each is one of the query API's commands, as the user.

``POST /runs/{run_id}/{command}`` with the form's fields becomes the API's ``POST
/runs/{run_id}/{command}`` with the user's bearer token and the JSON body the API (and the
CLI) take. The API judges it: a refusal (not yours, stale subject, already decided, wrong
state) shows the run page with the API's own message and status; success redirects to the
run page (the browser's reload does not send it again).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from runstate.console.api import COMMANDS, Refused
from runstate.console.app import CONSOLE, PRINCIPAL, TOKEN, redirect
from runstate.console.pages import run_page
from runstate.errors import Error

__all__ = ["body_of", "register"]


def register(app: web.Application) -> None:
    app.router.add_post("/runs/{run_id}/{command}", command)


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def body_of(name: str, form: Any) -> dict[str, Any]:
    """The API's JSON body for command ``name`` from a form's fields."""
    if name == "approve":
        return {"comment": _field(form, "comment"), **_decision(form)}
    if name == "reject":
        return {"reason": _field(form, "reason"), **_decision(form)}
    if name == "cancel":
        return {"reason": _field(form, "reason")}
    if name == "retry-step":
        return {"step": _field(form, "step"), "reason": _field(form, "reason")}
    found = None if form.get("outcome") == "not_found" else _field(form, "found") or ""
    return {"key": _field(form, "key"), "found": found, "reason": _field(form, "reason")}


def _decision(form: Any) -> dict[str, Any]:
    return {
        "subject_hash": _field(form, "subject_hash"),
        "override_reason": _field(form, "override_reason"),
    }


async def command(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    name = request.match_info["command"]
    run_id = request.match_info["run_id"]
    if name not in COMMANDS:
        raise web.HTTPNotFound()
    body = body_of(name, await request.post())
    if name == "resolve-action" and body["found"] == "":
        return await run_page(
            request,
            error="give the external id the system has, or choose 'not found'",
            status=400,
        )
    try:
        await console.api.command(request[TOKEN], run_id, name, body)
    except Refused as exc:
        console.metrics.commands.labels(name, "refused").inc()
        return await run_page(request, error=exc.message, status=exc.status)
    except Error as exc:
        console.metrics.commands.labels(name, "unreachable").inc()
        return await run_page(request, error=str(exc), status=502)
    console.metrics.commands.labels(name, "ok").inc()
    who = request[PRINCIPAL].name
    request.app.logger.info("console: %s by %s on run %s", name, who, run_id)
    return redirect(f"/runs/{urllib.parse.quote(run_id, safe='')}?done={name}")
