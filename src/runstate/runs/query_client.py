"""A small blocking client of the query API, for the CLI, the agent SDK and scripts.

It keeps a pool of HTTP connections (httpx), so a process that asks many times (a reactor, an
agent reading after each write) reuses its connections instead of opening one per call. A
``GET`` that could not reach the worker (refused, reset, a pooled connection the worker had
closed) is tried again a few times with a short pause: every call is a read, so repeating it
is safe. A ``POST`` (a decision or an operator command) is tried again only when the
connection could not be opened, so it was never sent. Close the client (or use ``with``) to
release the connections. With the API's auth on, give the bearer ``token``
(``RUNSTATE_TOKEN``).
"""

from __future__ import annotations

import time
import urllib.parse
from types import TracebackType
from typing import Any

import httpx

from runstate.errors import QueryError, QueryUnreachable
from runstate.runs.run_view import RunFilter

__all__ = ["QueryClient"]

#: Runs asked for per page when following pages (the API allows up to 1,000).
_PAGE = 500

#: Failures to reach the worker that another try may not meet (the request was not answered).
_RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)

#: Failures that prove the request was never sent: the only ones a POST is tried again on.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)

#: Longest wait to open a connection; a worker that is up accepts at once.
_CONNECT_TIMEOUT_S = 5.0


class QueryClient:
    """GETs JSON from a processor worker; any worker answers (it routes to the owner).

    Args:
        base_url: the worker's query API, e.g. ``http://127.0.0.1:6066``.
        timeout_s: the longest wait for one answer (a read-your-writes read waits in the
            worker, so give it more than the ``timeout`` it asks for).
        retries: further tries of a call that could not reach the worker.
        retry_pause_s: the pause before the first further try; it doubles each time.
        token: the bearer token to send (``RUNSTATE_TOKEN``) when the API has auth on.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 2,
        retry_pause_s: float = 0.2,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_pause_s = retry_pause_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, _CONNECT_TIMEOUT_S)),
            headers={} if token is None else {"Authorization": f"Bearer {token}"},
        )

    def close(self) -> None:
        """Close the pooled connections; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """The JSON body of ``GET path?params``; None-valued params are left out.

        Raises:
            QueryError: HTTP error (the message carries the API's own message).
            QueryUnreachable: the worker could not be reached after the retries, or did not
                answer within ``timeout_s``.
        """
        query = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, _RETRIED, params=query)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of ``POST path`` with a JSON ``body``.

        Tried again only when the connection could not be opened (the request was not sent).

        Raises:
            QueryError, QueryUnreachable: as :meth:`get`.
        """
        return self._send("POST", path, _NOT_SENT, json=body)

    def _send(
        self,
        method: str,
        path: str,
        retried: tuple[type[Exception], ...],
        **request: Any,
    ) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        pause = self.retry_pause_s
        for tries_left in range(self.retries, -1, -1):
            try:
                resp = self._http.request(method, url, **request)
                break
            except retried as exc:
                if tries_left == 0:
                    raise self._unreachable(exc) from exc
            except httpx.TransportError as exc:  # a timeout: the worker may be working on it
                raise self._unreachable(exc) from exc
            time.sleep(pause)
            pause *= 2
        if resp.is_error:
            try:
                detail = resp.json().get("message", "")
            except ValueError:
                detail = ""
            err = QueryError(f"{resp.url}: HTTP {resp.status_code} {detail}".strip())
            err.status = resp.status_code  # type: ignore[attr-defined]
            raise err
        try:
            body: dict[str, Any] = resp.json()
        except ValueError as exc:
            raise QueryError(f"{resp.url}: the answer is not JSON ({exc})") from exc
        return body

    def _unreachable(self, exc: Exception) -> QueryUnreachable:
        return QueryUnreachable(
            f"cannot reach the query API at {self.base_url} ({type(exc).__name__}: {exc});"
            " is a processor running (`runstate processor run`)? set RUNSTATE_QUERY_URL or --url"
        )

    def run(
        self,
        run_id: str,
        *,
        min_partition: int | None = None,
        min_offset: int | None = None,
        timeout_s: float | None = None,
        sealed: bool = False,
    ) -> dict[str, Any]:
        """The run as JSON; ``sealed``: personal fields as written (the SDK opens them
        with its own keys) instead of opened or masked for the caller's role."""
        return self.get(
            f"/runs/{urllib.parse.quote(run_id, safe='')}",
            min_partition=min_partition,
            min_offset=min_offset,
            timeout=timeout_s,
            personal="sealed" if sealed else None,
        )

    def run_events(
        self, run_id: str, *, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of the run's event journal (``GET /runs/{id}/events``), oldest first:
        ``events``, and ``next``, the cursor of the following page (None: no more now).

        Raises:
            QueryError: as :meth:`get`; a run not in the hot store is a 404 whose message
                names ``runstate replay --run ID --history``.
        """
        return self.get(
            f"/runs/{urllib.parse.quote(run_id, safe='')}/events", after=after, limit=limit
        )

    def runs(
        self, flt: RunFilter, *, limit: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """One page of ``GET /runs`` with this filter: at most ``limit`` runs (the API's
        default if None) from the ``after`` cursor on; ``next`` is the following page's cursor.

        Raises:
            QueryError: as :meth:`get`.
        """
        return self.get("/runs", **flt.as_query(), limit=limit, after=after)

    def all_runs(self, flt: RunFilter, *, limit: int | None = None) -> dict[str, Any]:
        """Every run matching ``flt`` (or the first ``limit``), following the pages.

        The answer has the shape of one page (``runs``, ``count``, ``complete``,
        ``missing_partitions``, ``errors``, ``workers``, ``as_of``, the last two merged over
        the pages) with ``next`` set only when ``limit`` cut the listing short.
        A page missing some partitions ends the walk: its cursor points back at the first
        missing partition, so the pages after it would repeat runs already listed; the answer
        is then incomplete, and the runs of partitions after the page may be missing too.

        Raises:
            QueryError: as :meth:`get`.
        """
        runs: list[dict[str, Any]] = []
        workers: set[str] = set()
        as_of: dict[str, Any] = {}
        body: dict[str, Any] = {}
        after: str | None = None
        while True:
            want = None if limit is None else min(limit - len(runs), _PAGE)
            body = self.runs(flt, limit=_PAGE if want is None else want, after=after)
            runs.extend(body["runs"])
            workers.update(body.get("workers", []))
            as_of.update(body.get("as_of", {}))
            after = body.get("next")
            if after is None or not body.get("complete", True):
                break
            if limit is not None and len(runs) >= limit:
                break
        incomplete = not body.get("complete", True)
        errors = list(body.get("errors", []))
        if incomplete and after is not None:
            errors.append("the listing stopped at the missing partitions")
        return {
            "runs": runs,
            "count": len(runs),
            "complete": not incomplete,
            "missing_partitions": body.get("missing_partitions", []),
            "errors": errors,
            "next": None if incomplete else after,
            "workers": sorted(workers),
            "as_of": as_of,
        }
