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


class QueryClient:
    """GETs JSON from a processor worker; any worker answers (it routes to the owner)."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """The JSON body of ``GET path?params``; None-valued params are left out.

        Raises:
            QueryError: HTTP error (the message carries the API's own message), or the worker
                is unreachable.
        """
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
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

    def runs(self, flt: RunFilter) -> dict[str, Any]:
        """``GET /runs`` with this filter.

        Raises:
            QueryError: as :meth:`get`.
        """
        return self.get("/runs", **flt.as_query())
