"""The query API as the console uses it: as the signed-in user, off the event loop.

Every call is made with the user's own bearer token through the same client the CLI uses
(:class:`~runstate.runs.query_client.QueryClient`), so the API's authentication, authorization
and protections (stale subject, double decision, state rules) apply to the console exactly as
to the CLI. The console has no write path of its own: its buttons are the API's ``POST
/runs/{id}/<command>`` endpoints. The blocking client runs in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from runstate.errors import QueryError
from runstate.runs.query_client import QueryClient
from runstate.runs.run_view import RunFilter

__all__ = ["COMMANDS", "ConsoleApi", "Refused"]

_T = TypeVar("_T")

#: The API's command endpoints the console's buttons post to.
COMMANDS = frozenset({"approve", "reject", "cancel", "retry-step", "resolve-action"})


class Refused(QueryError):
    """The query API answered an error; ``message`` is its own words, for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsoleApi:
    """Reads and commands through one processor group's query API.

    Args:
        base_url: any worker's query API (it routes to the owner).
        timeout_s: the longest wait for one answer.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def _call(self, token: str, fn: Callable[[QueryClient], _T]) -> _T:
        def blocking() -> _T:
            with QueryClient(self.base_url, timeout_s=self.timeout_s, token=token) as client:
                try:
                    return fn(client)
                except QueryError as exc:
                    status = getattr(exc, "status", None)
                    if status is None:
                        raise
                    message = str(exc).split(f"HTTP {status}", 1)[-1].strip()
                    raise Refused(status, message or f"HTTP {status}") from exc

        return await asyncio.get_running_loop().run_in_executor(None, blocking)

    async def run(self, token: str, run_id: str) -> dict[str, Any]:
        """One run's JSON.

        Raises:
            Refused: an error answer, with the API's message (404: not in the hot store, and
                how to rebuild a finished run that left it).
            QueryUnreachable: no worker answered.
        """
        return await self._call(token, lambda c: c.run(run_id))

    async def run_events(
        self, token: str, run_id: str, *, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """A page of the run's event journal (``events``, ``next``).

        Raises:
            Refused: as :meth:`run`.
            QueryUnreachable: no worker answered.
        """
        return await self._call(token, lambda c: c.run_events(run_id, after=after, limit=limit))

    async def runs(
        self, token: str, flt: RunFilter, *, limit: int, after: str | None = None
    ) -> dict[str, Any]:
        """One page of runs (``runs``, ``next``, ``complete``...)."""
        return await self._call(token, lambda c: c.runs(flt, limit=limit, after=after))

    async def all_runs(self, token: str, flt: RunFilter, *, limit: int) -> dict[str, Any]:
        """Every run matching ``flt`` up to ``limit``, over the pages."""
        return await self._call(token, lambda c: c.all_runs(flt, limit=limit))

    async def command(
        self, token: str, run_id: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """``POST /runs/{run_id}/{name}`` as the token's principal; the API's answer.

        Raises:
            Refused: the API refused (403 who, 409 the run's state or a stale subject, 400
                a missing reason); the message is the API's own.
            ValueError: ``name`` is not one of :data:`COMMANDS`.
        """
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}")
        path = f"/runs/{urllib.parse.quote(run_id, safe='')}/{name}"
        return await self._call(token, lambda c: c.post(path, body))
