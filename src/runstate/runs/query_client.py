"""A small blocking client of the query API, for the CLI and scripts."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from runstate.errors import QueryError, QueryUnreachable
from runstate.runs.run_view import RunFilter

__all__ = ["QueryClient"]

#: Runs asked for per page when following pages (the API allows up to 1,000).
_PAGE = 500


class QueryClient:
    """GETs JSON from a processor worker; any worker answers (it routes to the owner)."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, token: str | None = None) -> None:
        """``token``: the bearer token to send (``RUNSTATE_TOKEN``) when the API has auth on."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """The JSON body of ``GET path?params``; None-valued params are left out.

        Raises:
            QueryError: HTTP error (the message carries the API's own message), or the worker
                is unreachable.
        """
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        return self._send(urllib.request.Request(url, headers=self._headers))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of ``POST path`` with a JSON ``body``.

        Raises:
            QueryError: as :meth:`get`.
        """
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=json.dumps(body).encode(),
            headers={**self._headers, "Content-Type": "application/json"},
            method="POST",
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> dict[str, Any]:
        url = request.full_url
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("message", "")
            except ValueError:
                detail = ""
            err = QueryError(f"{url}: HTTP {exc.code} {detail}".strip())
            err.status = exc.code  # type: ignore[attr-defined]
            raise err from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise QueryUnreachable(
                f"cannot reach the query API at {self.base_url} ({exc}); is a processor"
                " running (`runstate processor run`)? set RUNSTATE_QUERY_URL or --url"
            ) from exc

    def run(
        self,
        run_id: str,
        *,
        min_partition: int | None = None,
        min_offset: int | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        return self.get(
            f"/runs/{urllib.parse.quote(run_id, safe='')}",
            min_partition=min_partition,
            min_offset=min_offset,
            timeout=timeout_s,
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
