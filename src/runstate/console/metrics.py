"""The console's own ``/metrics`` (Prometheus text): pages served, sign-ins, commands.

A registry of its own (not the process-wide default), like the workers', so two consoles in
one process (the tests) never mix their figures.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, generate_latest

__all__ = ["CONTENT_TYPE", "ConsoleMetrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class ConsoleMetrics:
    """Counters of one console process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "runstate_console_requests",
            "HTTP requests answered, by page and status code",
            ["page", "code"],
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "runstate_console_sign_ins",
            "sign-in attempts, by result (ok, unknown_token, name_mismatch)",
            ["result"],
            registry=self.registry,
        )
        self.commands = Counter(
            "runstate_console_commands",
            "commands sent to the query API, by command and result (ok, refused, unreachable)",
            ["command", "result"],
            registry=self.registry,
        )
        self.csrf_refused = Counter(
            "runstate_console_csrf_refused",
            "POSTs refused for a missing or wrong CSRF token",
            registry=self.registry,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
