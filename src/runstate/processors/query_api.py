"""The HTTP query API every worker serves: one run by id, lists across the group, health.

Any worker answers any question. ``GET /runs/{run_id}`` is answered from the table by the
worker that actively owns the run's partition (never from a standby copy, which may lag);
other workers forward it there. ``GET /runs`` asks every worker of the group for the runs of
the partitions it owns and merges the answers. Forwarded requests carry ``local=1`` so they
are never forwarded again; a worker that is asked locally about a partition it does not own
(a rebalance moved it) says so with 503 and the asking worker retries until its deadline.

``GET /runs`` filters (all optional, every given one must hold): ``status``, ``owner``,
``approver``, ``overdue=true``, ``step`` (the current step), ``phase`` (the current step's
:class:`~runstate.runs.state.StepPhase`) and ``idle_for`` (a duration such as ``90s``,
``15m``, ``2h``, ``1d``: the run's ``updated_at`` is at least that long ago). A bad value is
a 400 whose message lists what is accepted; see :class:`~runstate.runs.run_view.RunFilter`.

Read-your-writes: ``min_partition``/``min_offset`` (the ``Delivery`` a producer got back)
make the owner wait until it has processed that offset, up to ``timeout`` seconds, else 504.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from mode import Service

from runstate.runs.run_view import RunFilter, run_to_json
from runstate.runs.state import RunState
from runstate.streams.partitioning import partition_for

__all__ = ["QueryServer", "RunDirectory"]

log = logging.getLogger(__name__)

_RETRY_S = 0.2
_MAX_TIMEOUT_S = 60.0


class RunDirectory(Protocol):
    """What the API needs from the worker: its table, its partitions and its peers."""

    @property
    def worker_id(self) -> str: ...

    @property
    def url(self) -> str:
        """This worker's own base URL (faust's ``canonical_url``)."""
        ...

    @property
    def partitions(self) -> int: ...

    @property
    def default_timeout_s(self) -> float: ...

    def owns(self, partition: int) -> bool:
        """Whether this worker is the active owner of ``partition`` and has restored it."""
        ...

    def owner_url(self, partition: int) -> str | None:
        """The URL of the worker owning ``partition``, or None (e.g. during a rebalance)."""
        ...

    def member_urls(self) -> list[str]:
        """Every worker of the group, this one included."""
        ...

    def owned_partitions(self) -> list[int]: ...

    def read(self, run_id: str) -> RunState | None:
        """The run's state from the local table."""
        ...

    def local_runs(self) -> Iterable[RunState]:
        """Every run of the partitions this worker actively owns."""
        ...

    def processed_through(self, partition: int) -> int | None:
        """Highest offset of ``partition`` known processed (by this or an earlier owner)."""
        ...

    async def wait_processed(self, partition: int, offset: int, timeout_s: float) -> bool: ...

    def health(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...


class _NotOwner(Exception):
    pass


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


class QueryServer(Service):
    """aiohttp on ``host:port``, run as a mode Service next to the faust app."""

    def __init__(self, directory: RunDirectory, *, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory
        self.host = host
        self.port = port
        self.web_url = f"http://{host}:{port}"
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def build(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/runs", self.list_runs)
        app.router.add_get("/runs/{run_id}", self.show_run)
        return app

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_MAX_TIMEOUT_S))
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info("query API on %s", self.web_url)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- handlers ----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.directory.health())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.json_response(self.directory.metrics())

    async def show_run(self, request: web.Request) -> web.Response:
        d = self.directory
        run_id = request.match_info["run_id"]
        try:
            timeout_s = min(
                float(request.query.get("timeout", d.default_timeout_s)), _MAX_TIMEOUT_S
            )
            min_offset = _opt_int(request.query.get("min_offset"))
            min_partition = _opt_int(request.query.get("min_partition"))
        except ValueError as exc:
            return _error(
                400, "bad_request", f"{exc}; timeout, min_offset and min_partition are numbers"
            )
        partition = partition_for(run_id.encode(), d.partitions)
        if min_offset is not None and min_partition is None:
            min_partition = partition
        local = request.query.get("local") in {"1", "true"}
        deadline = time.monotonic() + timeout_s
        while True:
            if d.owns(partition):
                try:
                    return await self._answer_locally(
                        run_id, partition, min_partition, min_offset, deadline
                    )
                except _NotOwner:
                    pass
            elif local:
                return _error(
                    503,
                    "not_owner",
                    f"worker {d.worker_id} does not own partition {partition}; ask another worker",
                    partition=partition,
                )
            else:
                owner = d.owner_url(partition)
                if owner is not None and owner.rstrip("/") != d.url:
                    forwarded = await self._forward(owner, request, deadline)
                    if forwarded is not None:
                        return forwarded
            if time.monotonic() >= deadline:
                return _error(
                    503,
                    "no_owner",
                    f"no worker owned partition {partition} of run"
                    f" {run_id!r} within {timeout_s}s (rebalancing, or no worker"
                    " running); retry",
                    partition=partition,
                )
            await asyncio.sleep(_RETRY_S)

    async def _answer_locally(
        self,
        run_id: str,
        partition: int,
        min_partition: int | None,
        min_offset: int | None,
        deadline: float,
    ) -> web.Response:
        d = self.directory
        while True:
            if not d.owns(partition):
                raise _NotOwner
            state = d.read(run_id)
            if (
                min_offset is None
                or min_partition is None
                or _caught_up(
                    d, state, partition if state is not None else None, min_partition, min_offset
                )
            ):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                done = d.processed_through(min_partition)
                return _error(
                    504,
                    "not_caught_up",
                    f"worker {d.worker_id} has processed partition {min_partition} up to"
                    f" offset {done}, not yet {min_offset}; retry later or raise timeout"
                    " (is the processor keeping up? see /metrics)",
                    partition=min_partition,
                    processed_offset=done,
                    wanted_offset=min_offset,
                )
            await d.wait_processed(min_partition, min_offset, min(left, _RETRY_S * 5))
        if state is None:
            return _error(
                404,
                "unknown_run",
                f"no run {run_id!r}; check the id, or pass"
                " min_partition/min_offset to wait for a run just started",
                run_id=run_id,
            )
        body = run_to_json(state)
        body["served_by"] = d.worker_id
        body["partition"] = partition
        return web.json_response(body)

    async def _forward(
        self, owner: str, request: web.Request, deadline: float
    ) -> web.Response | None:
        """Ask the owner; None when it could not answer (not owner now, unreachable)."""
        assert self._session is not None
        query = dict(request.query)
        query["local"] = "1"
        query["timeout"] = f"{max(deadline - time.monotonic(), 0.0):.3f}"
        url = owner.rstrip("/") + request.path
        try:
            async with self._session.get(url, params=query) as resp:
                body = await resp.read()
                if resp.status == 503:
                    return None
                return web.Response(body=body, status=resp.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("forwarding to %s failed: %s", owner, exc)
            return None

    async def list_runs(self, request: web.Request) -> web.Response:
        d = self.directory
        try:
            flt = RunFilter.from_query(request.query)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        now = datetime.now(UTC)
        local_partitions = d.owned_partitions()
        runs = [run_to_json(s) for s in d.local_runs() if flt.matches(s, now)]
        if request.query.get("local") in {"1", "true"}:
            return web.json_response(
                {"runs": runs, "partitions": local_partitions, "worker_id": d.worker_id}
            )
        covered = set(local_partitions)
        workers = [d.worker_id]
        errors: list[str] = []
        others = [u for u in d.member_urls() if u.rstrip("/") != d.url]
        answers = await asyncio.gather(*(self._ask_local(u, flt) for u in others))
        for url, answer in zip(others, answers, strict=True):
            if isinstance(answer, str):
                errors.append(f"{url}: {answer}")
                continue
            runs.extend(answer["runs"])
            covered.update(answer["partitions"])
            workers.append(answer["worker_id"])
        merged: dict[str, dict[str, Any]] = {}
        for run in runs:
            have = merged.get(run["run_id"])
            if have is None or run["version"] > have["version"]:
                merged[run["run_id"]] = run
        ordered = sorted(merged.values(), key=lambda r: (r["created_at"], r["run_id"]))
        missing = sorted(set(range(d.partitions)) - covered)
        return web.json_response(
            {
                "runs": ordered,
                "count": len(ordered),
                "workers": workers,
                "complete": not missing,
                "missing_partitions": missing,
                "errors": errors,
            }
        )

    async def _ask_local(self, url: str, flt: RunFilter) -> dict[str, Any] | str:
        assert self._session is not None
        try:
            async with self._session.get(
                url.rstrip("/") + "/runs",
                params={**flt.as_query(), "local": "1"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                body: dict[str, Any] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"unreachable: {exc}"


def _opt_int(text: str | None) -> int | None:
    return None if text in (None, "") else int(text)


def _caught_up(
    d: RunDirectory,
    state: RunState | None,
    state_partition: int | None,
    partition: int,
    offset: int,
) -> bool:
    """Whether ``offset`` of ``partition`` is processed: the run's own state already holds
    it (same partition), or the worker (or the group's committed offset) got past it."""
    if (
        state is not None
        and state_partition == partition
        and state.last_offset is not None
        and state.last_offset >= offset
    ):
        return True
    done = d.processed_through(partition)
    return done is not None and done >= offset
