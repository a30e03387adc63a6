"""Start the console: settings checked, the identity file read, then serve until stopped."""

from __future__ import annotations

import logging

from aiohttp import web

from runstate.console.api import ConsoleApi
from runstate.console.app import Console, ConsoleConfig, create_app
from runstate.console.metrics import ConsoleMetrics
from runstate.console.session import SessionCodec, console_secret
from runstate.console.views import environment
from runstate.errors import ConfigError
from runstate.identity import FileDirectory
from runstate.settings import Settings
from runstate.streams.topics import TopicNames

__all__ = ["build_console", "parse_listen", "serve"]

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (or ``:port`` for 127.0.0.1).

    Raises:
        ConfigError: not host:port with a port from 1 to 65535.
    """
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"--listen {text!r} is not HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]") or "127.0.0.1", number


def build_console(
    settings: Settings, *, query_url: str, secure_cookies: bool = False, refresh_s: int = 15
) -> Console:
    """The console's parts from the settings.

    Raises:
        ConfigError: no identity file (the console signs nobody in without one: no
            anonymous decisions), a bad identity file, or a too short console secret.
    """
    if settings.auth_file is None:
        raise ConfigError(
            "the console needs RUNSTATE_AUTH_FILE (the identity file the query API uses):"
            " it signs people in with their tokens, and makes no anonymous decisions"
        )
    configured = settings.console_secret
    secret, generated = console_secret(
        None if configured is None else configured.get_secret_value()
    )
    if generated:
        log.warning(
            "console: RUNSTATE_CONSOLE_SECRET is not set; sessions are signed with a random"
            " secret and end when this console restarts"
        )
    return Console(
        api=ConsoleApi(query_url),
        directory=FileDirectory.load(settings.auth_file),
        codec=SessionCodec(secret, ttl_s=settings.console_session_hours * 3600),
        config=ConsoleConfig(
            bootstrap_servers=settings.bootstrap_servers,
            dead_letter_topic=TopicNames(settings.topic_prefix).dead_letters,
            secure_cookies=secure_cookies,
            refresh_s=refresh_s,
        ),
        templates=environment(),
        metrics=ConsoleMetrics(),
    )


def serve(console: Console, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    app = create_app(console)
    log.info("console: http://%s:%d/ reading %s", host, port, console.api.base_url)
    web.run_app(app, host=host, port=port, print=None, access_log=log)
