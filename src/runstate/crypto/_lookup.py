"""Looking up one wrapped data key by subject and version without holding the key topic.

An agent process usually makes the keys it seals with, but opening a value sealed by an
earlier process (a resumed run's completed step, a decision's comment sealed by the worker)
needs a key it never saw. Reading the whole data-keys topic for it would cost every agent
start a read of every key ever made; instead the process asks one that keeps a mirror of the
topic: a processor worker's query API (``GET /data-keys/{subject}/{version}``), one point
read there. The answer is the *wrapped* key, useless without the master key; the API still
asks for a principal allowed to fetch keys (the ``agent`` or ``personal-data`` role).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Protocol

import httpx

from runstate.crypto._store import WrappedKey
from runstate.errors import QueryError, QueryUnreachable

__all__ = ["KeyLookup", "QueryApiKeyLookup", "data_key_path"]

_RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class KeyLookup(Protocol):
    """Finds one wrapped key that a store does not hold."""

    def lookup(self, subject: str, version: str) -> WrappedKey | None:
        """The key, or None when it does not exist (erased, or never made).

        Raises:
            QueryError: the lookup could not be answered (unreachable, refused).
        """
        ...

    def close(self) -> None: ...


def data_key_path(subject: str, version: str) -> str:
    """``/data-keys/<subject>/<version>``, the subject percent-encoded (``/`` included)."""
    return (
        f"/data-keys/{urllib.parse.quote(subject, safe='')}/{urllib.parse.quote(version, safe='')}"
    )


class QueryApiKeyLookup:
    """Asks a processor worker's query API (any worker: each keeps the whole mirror).

    Args:
        base_url: ``RUNSTATE_QUERY_URL``.
        token: ``RUNSTATE_TOKEN``, when the API has auth on.
        timeout_s: the longest wait for one answer.
        retries: further tries of a call that could not reach the worker (a GET: safe).
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = 30.0, retries: int = 2
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={} if token is None else {"Authorization": f"Bearer {token}"},
        )
        #: Lookups made (tests and benchmarks count them).
        self.lookups = 0

    def lookup(self, subject: str, version: str) -> WrappedKey | None:
        url = self.base_url + data_key_path(subject, version)
        self.lookups += 1
        pause = 0.2
        for tries_left in range(self.retries, -1, -1):
            try:
                resp = self._http.get(url)
                break
            except _RETRIED as exc:
                if tries_left == 0:
                    raise self._unreachable(exc) from exc
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            time.sleep(pause)
            pause *= 2
        if resp.status_code == 404:
            try:
                error = resp.json().get("error")
            except ValueError:
                error = None
            if error == "unknown_key":
                return None
        if resp.is_error:
            try:
                detail = str(resp.json().get("message", ""))
            except ValueError:
                detail = ""
            raise QueryError(
                f"looking up a data key at {self.base_url}: HTTP {resp.status_code} {detail}"
            )
        try:
            return WrappedKey.from_json(resp.content)
        except ValueError as exc:
            raise QueryError(f"looking up a data key at {self.base_url}: {exc}") from None

    def _unreachable(self, exc: Exception) -> QueryUnreachable:
        return QueryUnreachable(
            f"cannot reach the query API at {self.base_url} to look up a data key ({exc});"
            " start a processor worker or fix RUNSTATE_QUERY_URL (or give this process a key"
            " cache folder, RUNSTATE_KEY_CACHE_DIR)"
        )

    def close(self) -> None:
        self._http.close()
