"""The console's aiohttp application: sessions, sign-in, CSRF, and the pages' routes.

Every request but ``/sign-in``, ``/static/*``, ``/health`` and ``/metrics`` needs a signed-in
session; without one a GET is redirected to ``/sign-in`` (303) and a POST refused (401).
Every POST must carry the session's CSRF token (the form field ``csrf``), else 403 and
nothing happens. The principal is found from the session's token on every request, with the
same identity directory (and code) the query API uses. Tokens are never logged.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from aiohttp import web

from runstate.console.api import ConsoleApi
from runstate.console.metrics import CONTENT_TYPE, ConsoleMetrics
from runstate.console.session import COOKIE, Session, SessionCodec
from runstate.console.views import render
from runstate.identity import Directory, Principal

__all__ = [
    "CONSOLE",
    "PRINCIPAL",
    "SESSION",
    "TOKEN",
    "Console",
    "ConsoleConfig",
    "create_app",
    "csrf_of",
    "redirect",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", Principal)
SESSION = web.RequestKey("session", Session)
TOKEN = web.RequestKey("token", str)
_NEW_SESSION = web.RequestKey("new_session", Session)
#: Paths served without a session.
_OPEN = ("/static/", "/health", "/metrics")
_STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Where the console reads from, and how its cookies are set.

    Attributes:
        bootstrap_servers: Kafka, for the dead-letter page (read only).
        dead_letter_topic: the dead-letter topic's name.
        secure_cookies: mark the cookie ``Secure`` (the console is served over HTTPS).
        refresh_s: how often list pages refresh themselves.
    """

    bootstrap_servers: str
    dead_letter_topic: str
    secure_cookies: bool = False
    refresh_s: int = 15


@dataclass(frozen=True, slots=True)
class Console:
    """What the handlers share."""

    api: ConsoleApi
    directory: Directory
    codec: SessionCodec
    config: ConsoleConfig
    templates: jinja2.Environment
    metrics: ConsoleMetrics


CONSOLE = web.AppKey("console", Console)


def create_app(console: Console) -> web.Application:
    """The application, with every page registered (:mod:`runstate.console.pages`,
    :mod:`runstate.console.actions`)."""
    from runstate.console import actions, pages

    # _count outermost: the redirects and refusals of _sessions are counted too.
    app = web.Application(middlewares=[_count, _sessions])
    app[CONSOLE] = console
    app.router.add_get("/sign-in", sign_in_page)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_post("/sign-out", sign_out)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", _STATIC)
    pages.register(app)
    actions.register(app)
    return app


def _local(target: str | None) -> str:
    """``target`` if it is a path of this site, else ``/`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 for c in target):  # no header splitting
        return "/"
    return target


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[CONSOLE]
    route = request.match_info.route.resource
    page = route.canonical if route is not None else "unknown"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        console.metrics.requests.labels(page, str(exc.status)).inc()
        raise
    console.metrics.requests.labels(page, str(response.status)).inc()
    return response


@web.middleware
async def _sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[CONSOLE]
    if request.path.startswith(_OPEN):
        return await handler(request)
    session = console.codec.decode(request.cookies.get(COOKIE))
    if session is None:
        session = console.codec.anonymous()
        request[_NEW_SESSION] = session
    request[SESSION] = session
    if request.method == "POST":
        form = await request.post()
        given = form.get("csrf")
        if not console.codec.csrf_ok(session, given if isinstance(given, str) else None):
            console.metrics.csrf_refused.inc()
            return _refuse(request, 403, "this form is stale or not from the console (no valid"
                           " CSRF token); reload the page and try again")  # fmt: skip
    principal = None
    if session.token is not None:
        principal = console.directory.authenticate(session.token)
    if principal is not None and session.token is not None:
        request[PRINCIPAL] = principal
        request[TOKEN] = session.token
    elif request.path != "/sign-in":
        if request.method == "POST":
            return _refuse(request, 401, "sign in first")
        target = urllib.parse.quote(request.path_qs, safe="")
        return _with_cookie(request, redirect(f"/sign-in?next={target}"))
    return _with_cookie(request, await handler(request))


def _refuse(request: web.Request, status: int, message: str) -> web.StreamResponse:
    console = request.app[CONSOLE]
    response = render(
        console.templates,
        "refused.html",
        status=status,
        message=message,
        principal=request.get(PRINCIPAL),
        csrf="",
    )
    return _with_cookie(request, response)


def _with_cookie(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    session = request.get(_NEW_SESSION)
    if session is not None:
        console = request.app[CONSOLE]
        response.set_cookie(
            COOKIE,
            console.codec.encode(session),
            httponly=True,
            samesite="Strict",
            secure=console.config.secure_cookies,
            path="/",
            expires=None,
        )
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser GETs ``location``."""
    return web.Response(status=303, headers={"Location": location})


def new_session(request: web.Request, session: Session) -> None:
    """Make ``session`` the browser's (sent with the response)."""
    request[_NEW_SESSION] = session
    request[SESSION] = session


def csrf_of(request: web.Request) -> str:
    """The CSRF token forms of this request's page carry."""
    return request.app[CONSOLE].codec.csrf_token(request[SESSION])


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    return render(
        console.templates,
        "sign_in.html",
        csrf=csrf_of(request),
        next=_local(request.query.get("next")),
        error=None,
        principal=request.get(PRINCIPAL),
    )


async def sign_in(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    token = str(form.get("token", "")).strip()
    name = str(form.get("name", "")).strip()
    target = _local(str(form.get("next", "/")))
    principal = console.directory.authenticate(token) if token else None
    error = None
    if principal is None:
        error, result = "unknown token: check it, or ask an admin for one", "unknown_token"
    elif name and name != principal.name:
        error, result = f"this token is not {name!r}'s", "name_mismatch"
    else:
        result = "ok"
    console.metrics.sign_ins.labels(result).inc()
    if error is not None:
        log.info("console: sign-in refused (%s)", result)
        return render(
            console.templates,
            "sign_in.html",
            status=401,
            csrf=csrf_of(request),
            next=target,
            error=error,
            principal=None,
        )
    assert principal is not None
    log.info("console: %s signed in", principal.name)
    new_session(request, console.codec.signed_in(token))
    return redirect(target)


async def sign_out(request: web.Request) -> web.StreamResponse:
    new_session(request, request.app[CONSOLE].codec.anonymous())
    return redirect("/sign-in")


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.StreamResponse:
    body = request.app[CONSOLE].metrics.text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
