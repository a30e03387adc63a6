"""``runstate console``: the operator console in a browser (docs/console.md)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from runstate.errors import ConfigError, MissingExtra
from runstate.settings import load_settings


def console(
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to serve on (loopback unless you say)")
    ] = "127.0.0.1:8000",
    query_url: Annotated[
        str | None,
        typer.Option(
            "--query-url", help="a processor worker's query API [default: RUNSTATE_QUERY_URL]"
        ),
    ] = None,
    refresh: Annotated[
        int, typer.Option("--refresh", min=5, help="seconds between list pages' refreshes")
    ] = 15,
    secure_cookies: Annotated[
        bool,
        typer.Option(
            "--secure-cookies", help="mark the session cookie Secure (served through HTTPS)"
        ),
    ] = False,
) -> None:
    """Serve the operator console: my approvals, runs, a run's page, dead letters. People
    sign in with their tokens (RUNSTATE_AUTH_FILE); everything is done as them, through the
    query API."""
    try:
        from runstate.console.serve import build_console, parse_listen, serve
    except ModuleNotFoundError as exc:  # aiohttp alone would name the processor's extra
        raise MissingExtra(
            f"`runstate console` needs runstate's 'console' extra ({exc.name} is not"
            " installed): pip install 'runstate[console]'"
        ) from None

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    s = load_settings()
    try:
        host, port = parse_listen(listen)
    except ConfigError as exc:
        raise typer.BadParameter(
            str(exc).removeprefix("--listen "), param_hint="--listen"
        ) from None
    built = build_console(
        s, query_url=query_url or s.query_url, secure_cookies=secure_cookies, refresh_s=refresh
    )
    typer.echo(f"runstate console on http://{host}:{port}/ (Ctrl-C stops it)")
    serve(built, host, port)
