"""The HTTP query API of a runtime worker: one run by id, indexed lists, health, metrics.

It runs in a thread of its own (:class:`QueryServer`), never on the poll loop: a slow query
can delay an answer but never a poll, a heartbeat or a checkpoint, so it cannot get a worker
fenced. Nor does a query hold up the API's own event loop: store reads, decoding and the JSON
of runs happen in reader threads (:data:`READER_THREADS`), so ``/health`` and ``/metrics``
answer while a page of runs is being read. It reads only committed state: the stores hold
what the last Kafka transaction committed (the checkpoint applies writes after the commit),
never a batch in flight.

Any worker answers any question:

* ``GET /runs/{run_id}`` is answered by the worker that owns the run's partition (never a
  standby copy, which may lag); others forward it there (``local=1`` stops a second hop). With
  ``min_partition``/``min_offset`` (the ``Delivery`` a producer got back) the owner waits up to
  ``timeout`` seconds until that offset is committed (read-your-writes), else 504.
* ``GET /runs/{run_id}/events`` is routed the same way: a page of the run's journal
  (``after``, ``limit`` as below), read by one prefix scan from the cursor.
* ``GET /data-keys/{subject}/{version}``: one wrapped data key from the worker's mirror of
  the data-keys topic, for agent processes (the ``agent`` or ``personal-data`` role).
* ``GET /runs`` takes the filters of :class:`~runstate.runs.run_view.RunFilter`, ``limit``
  (default 100, at most 1,000) and ``after`` (the ``next`` cursor of the previous page). A page
  walks the partitions in order and, in each, the most selective index of the filter
  (:func:`~runstate.runs.run_index.list_runs`): it reads what it returns, never every run.
  Partitions owned elsewhere are asked through ``GET /partitions/{p}/runs`` on their owner.
  ``complete`` is false (and ``missing_partitions`` says which) when an owner could not be
  reached; the cursor then stops at the first missing partition, so retrying the same
  cursor loses nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from runstate.crypto import Opener, PersonalDataCipher, WrappedKey, reveal, shown_value
from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.errors import BrokerError, QueryError
from runstate.identity import Directory, Role
from runstate.runs.journal import read_journal
from runstate.runs.keyspace import KeyValueReader, head_key
from runstate.runs.layout import load_run
from runstate.runs.run_index import list_runs
from runstate.runs.run_view import RunFilter, run_to_json
from runstate.runs.state import RunState
from runstate.runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runstate.runtime.operator_api import PRINCIPAL, CommandRoutes, auth_middleware
from runstate.runtime.owners import GroupOwners
from runstate.streams.partitioning import partition_for

__all__ = ["READER_THREADS", "QueryServer", "QuerySource", "decode_cursor", "encode_cursor"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_RETRY_S = 0.1
#: Longest a read-your-writes wait sleeps without a commit waking it before it looks again.
_COMMIT_WAIT_S = 0.1
_MAX_TIMEOUT_S = 60.0
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Threads that read stores and render runs for the event loop: two, so one long page does
#: not queue a get by id behind it; more would only contend for the GIL with the poll loop.
READER_THREADS = 2


class QuerySource(Protocol):
    """What the API needs from its worker (:class:`~runstate.runtime.loop.Worker`)."""

    @property
    def worker_id(self) -> str: ...

    @property
    def partitions(self) -> int: ...

    def reading(self, partition: int) -> AbstractContextManager[KeyValueReader | None]:
        """The committed store of ``partition`` while this worker actively owns it and has
        restored it (None otherwise); the partition is not given up during the ``with``."""
        ...

    def processed_through(self, partition: int) -> int | None:
        """Highest offset of ``partition`` whose effects are committed, if known."""
        ...

    def owned_partitions(self) -> list[int]: ...

    def freshness(self, partition: int) -> dict[str, Any]:
        """What the answer from ``partition`` reflects (committed offset, commit time)."""
        ...

    def health(self) -> dict[str, Any]: ...

    def metrics(self) -> dict[str, Any]: ...

    def prometheus(self) -> bytes:
        """``/metrics`` in the Prometheus text format."""
        ...


def encode_cursor(partition: int, inner: str | None) -> str:
    """The ``next`` cursor of a list: where in which partition the next page starts."""
    raw = f"{partition}:{inner or ''}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str | None]:
    """``(partition, cursor within it)`` of :func:`encode_cursor`.

    Raises:
        ValueError: not a cursor of this API.
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        partition, _, inner = raw.partition(":")
        return int(partition), inner or None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"after={text!r} is not a cursor this API returned") from None


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", "")
    if text == "":
        return DEFAULT_LIMIT
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {value}")
    return value


class QueryServer:
    """aiohttp on ``host:port`` in a thread of its own.

    Args:
        source: The worker's committed state.
        owners: Who owns which partition (the consumer group's members).
        url: This worker's own base URL (as in its ``client.id``).
        default_timeout_s: Read-your-writes wait when a request names none.
        directory: Who may ask (bearer tokens), or None: local development mode, no
            authentication (:mod:`runstate.runtime.operator_api`).
        commands: The decision and operator endpoints, or None for a read-only API.
    """

    def __init__(
        self,
        source: QuerySource,
        owners: GroupOwners,
        *,
        host: str,
        port: int,
        url: str,
        default_timeout_s: float = 5.0,
        directory: Directory | None = None,
        commands: CommandRoutes | None = None,
        cipher: PersonalDataCipher | None = None,
    ) -> None:
        self.directory = directory
        self.cipher = cipher
        self.commands = commands
        self.source = source
        self.owners = owners
        self.host = host
        self.port = port
        self.url = url.rstrip("/")
        self.default_timeout_s = default_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._readers: ThreadPoolExecutor | None = None
        #: reads waiting for a commit (event loop thread only); the count is read by the
        #: worker's loop thread, so a commit with no one waiting costs it nothing
        self._commit_waiters: set[asyncio.Future[None]] = set()
        self._waiting = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Serve in a background thread; returns once the port is bound.

        Raises:
            QueryError: the port cannot be bound (in use?).
        """
        self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="query-reader")
        self._thread = threading.Thread(target=self._serve, name="query-api", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise QueryError(
                f"cannot serve the query API on {self.host}:{self.port}: {self._failure};"
                " choose another --web-port"
            ) from self._failure

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is not None and self._runner is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        readers, self._readers = self._readers, None
        if readers is not None:
            readers.shutdown(wait=False, cancel_futures=True)

    def waiting(self) -> bool:
        """Whether a read waits for a write to be committed (the worker's loop asks it, to
        checkpoint early; a plain read of a count, no lock)."""
        return self._waiting > 0

    def committed(self) -> None:
        """Called by the worker's checkpoint after each commit (its loop thread): wakes the
        reads waiting for their offset to be committed (read-your-writes) at once, instead
        of at their next look."""
        loop = self._loop
        if self._waiting and loop is not None:
            # RuntimeError: the API is stopping and its loop is closed
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._commit_waiters = self._commit_waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _next_commit(self) -> asyncio.Future[None]:
        """A future set at the next commit: taken *before* a read, so a commit landing
        between the read and the wait still wakes it."""
        waiter = asyncio.get_running_loop().create_future()
        self._commit_waiters.add(waiter)
        return waiter

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except OSError as exc:
            self._failure = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_MAX_TIMEOUT_S))
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info(
            "query API on %s:%s, advertised to other workers as %s", self.host, self.port, self.url
        )

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def build(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.directory)])
        if self.commands is not None:
            self.commands.register(app)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/metrics.json", self.metrics_json)
        app.router.add_get("/runs", self.list_runs)
        app.router.add_get("/runs/{run_id}", self.show_run)
        app.router.add_get("/runs/{run_id}/events", self.run_events)
        app.router.add_get("/partitions/{partition}/runs", self.partition_runs)
        app.router.add_get("/data-keys/{subject}/{version}", self.data_key)
        return app

    # -- handlers --------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        """Always 200 while the worker answers (liveness); with ``?ready=true``, 503 until it
        is ready (a readiness probe that reads only the status code)."""
        body = self.source.health()
        wants_ready = request.query.get("ready", "").lower() in ("1", "true", "yes")
        return web.json_response(body, status=503 if wants_ready and not body["ready"] else 200)

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format (docs/metrics.md); ``?format=json`` is ``/metrics.json``."""
        if request.query.get("format") == "json":
            return await self.metrics_json(request)
        # off the event loop: counting approvals reads the due indexes, other requests go on
        body = await asyncio.get_running_loop().run_in_executor(None, self.source.prometheus)
        response = web.Response(body=body)
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    async def metrics_json(self, request: web.Request) -> web.Response:
        """The worker's own counters as JSON (tests, benchmarks, a quick look with curl)."""
        return web.json_response(self.source.metrics())

    async def show_run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        try:
            timeout_s = min(
                float(request.query.get("timeout", self.default_timeout_s)), _MAX_TIMEOUT_S
            )
            min_offset = _opt_int(request.query.get("min_offset"))
            min_partition = _opt_int(request.query.get("min_partition"))
        except ValueError as exc:
            return _error(
                400, "bad_request", f"{exc}; timeout, min_offset and min_partition are numbers"
            )
        partition = partition_for(run_id.encode(), self.source.partitions)
        if min_offset is not None and min_partition is None:
            min_partition = partition
        deadline = time.monotonic() + timeout_s
        opener = self._opener(request)
        return await self._routed(
            request,
            run_id,
            partition,
            deadline,
            lambda: self._answer(run_id, partition, min_partition, min_offset, deadline, opener),
        )

    async def _routed(
        self,
        request: web.Request,
        run_id: str,
        partition: int,
        deadline: float,
        answer: Callable[[], Awaitable[web.Response | None]],
    ) -> web.Response:
        """``answer()`` here if this worker owns ``partition``, else the owner's answer to the
        same request (``local=1``: never a second hop); 503 when no one owns it in time."""
        local = request.query.get("local") in {"1", "true"}
        timeout_s = max(deadline - time.monotonic(), 0.0)
        while True:
            found = await answer()
            if found is not None:
                return found
            if local:
                return _error(
                    503,
                    "not_owner",
                    f"worker {self.source.worker_id} does not own partition {partition}",
                    partition=partition,
                )
            else:
                owner = self.owners.owner_url(partition)
                if owner is not None and owner.rstrip("/") != self.url:
                    forwarded = await self._forward(
                        owner, request.path, request.query, deadline, _auth_of(request)
                    )
                    if forwarded is not None:
                        return forwarded
            if time.monotonic() >= deadline:
                return _error(
                    503,
                    "no_owner",
                    f"no worker owned partition {partition} of run {run_id!r} within"
                    f" {timeout_s:.1f}s (rebalancing, or no worker running); retry",
                    partition=partition,
                )
            await asyncio.sleep(_RETRY_S)

    async def run_events(self, request: web.Request) -> web.Response:
        """A page of the run's journal (:mod:`runstate.runs.journal`), oldest first, from the
        owner of its partition: ``after`` (the ``next`` of the previous page) and ``limit``.
        One prefix scan from the cursor: it reads the entries it returns and one more."""
        run_id = request.match_info["run_id"]
        try:
            limit = _limit(request.query)
            after = _opt_int(request.query.get("after"))
            if after is not None and not 0 <= after < (1 << 63):
                raise ValueError(f"after={after} is not a cursor this API returned")
            timeout_s = min(
                float(request.query.get("timeout", self.default_timeout_s)), _MAX_TIMEOUT_S
            )
        except ValueError as exc:
            return _error(400, "bad_request", f"{exc}; after, limit and timeout are numbers")
        partition = partition_for(run_id.encode(), self.source.partitions)

        async def answer() -> web.Response | None:
            page = await self._read(self._journal_page, partition, run_id, after, limit)
            if page is None or isinstance(page, web.Response):
                return page
            return _json_text(await self._read(json.dumps, page))

        return await self._routed(request, run_id, partition, time.monotonic() + timeout_s, answer)

    def _journal_page(
        self, partition: int, run_id: str, after: int | None, limit: int
    ) -> dict[str, Any] | web.Response | None:
        """The page from the local store (a reader thread); None if not owned here."""
        with self.source.reading(partition) as reader:
            if reader is None:
                return None
            if reader.get(head_key(run_id)) is None:
                return _unknown_run(run_id)
            try:
                entries, following = read_journal(reader, run_id, after=after, limit=limit)
            except ValueError as exc:
                return _error(500, "unreadable_journal", f"run {run_id!r}: {exc}")
        return {
            "run_id": run_id,
            "events": [e.to_json() for e in entries],
            "count": len(entries),
            "next": None if following is None else str(following),
            "partition": partition,
            "served_by": self.source.worker_id,
            "as_of": self.source.freshness(partition),
            "history": f"runstate replay --run {run_id} --policy POLICY --history",
        }

    async def _answer(
        self,
        run_id: str,
        partition: int,
        min_partition: int | None,
        min_offset: int | None,
        deadline: float,
        opener: Opener | None,
    ) -> web.Response | None:
        """The run from the local store, once caught up; None if not owned (or no longer)."""
        waits = min_offset is not None and min_partition is not None
        commit: asyncio.Future[None] | None = None
        if waits:
            self._waiting += 1
        try:
            while True:
                commit = self._next_commit() if waits else None
                # Committed-through first, the store second: the checkpoint applies the store
                # before it moves the committed offset, so a read that follows a committed
                # offset past ``min_offset`` holds that write. (Read the other way round, a
                # commit landing between the two made a stale state look caught up.)
                done = (
                    None if min_partition is None else self.source.processed_through(min_partition)
                )
                owned, state = await self._read(self._load_local, partition, run_id)
                if not owned:
                    return None
                if min_offset is None or min_partition is None:
                    break
                if _caught_up(done, state, partition, min_partition, min_offset):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    done = self.source.processed_through(min_partition)
                    return _error(
                        504,
                        "not_caught_up",
                        f"worker {self.source.worker_id} has committed partition"
                        f" {min_partition} up to offset {done}, not yet {min_offset}; retry"
                        " later or raise timeout (is the processor keeping up? see /metrics)",
                        partition=min_partition,
                        processed_offset=done,
                        wanted_offset=min_offset,
                    )
                # Woken by the next commit; the timeout is a fallback for what moves without
                # one (transaction markers past the last record, noted after the commit).
                assert commit is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(commit), min(left, _COMMIT_WAIT_S))
                self._commit_waiters.discard(commit)
        finally:
            if commit is not None:
                self._commit_waiters.discard(commit)
            if waits:
                self._waiting -= 1
        if state is None:
            return _unknown_run(run_id)
        found: RunState = state

        def render() -> str:
            body = run_to_json(found)
            if opener is not None:
                body = reveal(body, opener)
            body["served_by"] = self.source.worker_id
            body["partition"] = partition
            body["as_of"] = self.source.freshness(partition)
            return json.dumps(body)

        return _json_text(await self._read(render))

    async def data_key(self, request: web.Request) -> web.Response:
        """One wrapped data key, for an agent process opening a value an earlier process
        sealed (:class:`~runstate.crypto.QueryApiKeyLookup`): a point read of the worker's
        mirror of the data-keys topic, caught up first, so the answer reflects every
        erasure made before the question. Wrapped keys open nothing without the master key;
        still only the ``agent`` and ``personal-data`` roles (admins) may fetch them."""
        principal = request.get(PRINCIPAL)
        if self.directory is not None and not (
            principal is not None
            and (principal.has(Role.AGENT) or principal.has(Role.PERSONAL_DATA))
        ):
            name = principal.name if principal is not None else "?"
            return _error(
                403,
                "not_authorized",
                f"{name!r} may not fetch data keys: that needs the role agent, personal-data"
                " or admin",
            )
        cipher = self.cipher
        if cipher is None:
            return _error(
                503,
                "no_key_store",
                f"worker {self.source.worker_id} has no master key, so no key store; set"
                " RUNSTATE_MASTER_KEY[_FILE] on the workers",
            )
        subject = request.match_info["subject"]
        version = request.match_info["version"]
        store = cipher.store

        def find() -> WrappedKey | None:
            if isinstance(store, KafkaKeyStore):
                return store.get(subject, version, fresh=True)
            return store.get(subject, version)

        try:
            # not in the reader threads: a lookup may wait for the key topic's broker, and
            # run queries must not queue behind it
            found = await asyncio.get_running_loop().run_in_executor(None, find)
        except (BrokerError, TimeoutError) as exc:
            return _error(503, "key_store_unreachable", f"reading the data-keys topic: {exc}")
        if found is None:
            return _error(
                404,
                "unknown_key",
                f"no data key {subject!r} version {version}: erased, or never made",
            )
        return web.Response(body=found.to_json(), content_type="application/json")

    def _opener(self, request: web.Request) -> Opener | None:
        """How personal fields are shown to this caller: None with ``personal=sealed`` (as
        written: the SDK opens them itself), else opened for principals with the
        ``personal-data`` role (admins too) when this worker has the master key, ``masked``
        for everyone else (development mode included), ``erased`` once the key is gone."""
        if request.query.get("personal") == "sealed":
            return None
        principal = request.get(PRINCIPAL)
        allowed = principal is not None and principal.has(Role.PERSONAL_DATA)
        return shown_value(self.cipher, allowed=allowed)

    def _local_page(
        self,
        partition: int,
        flt: RunFilter,
        now: datetime,
        after: str | None,
        limit: int,
        opener: Opener | None = None,
    ) -> dict[str, Any] | str | None:
        """A page of a partition this worker owns, rendered (a reader thread); None if not
        owned, a string if the cursor is not this listing's."""
        with self.source.reading(partition) as reader:
            if reader is None:
                return None
            try:
                runs, following = list_runs(reader, flt, now=now, after=after, limit=limit)
            except QueryError as exc:
                return str(exc)
        shown = [run_to_json(s) for s in runs]
        return {
            "runs": shown if opener is None else [reveal(r, opener) for r in shown],
            "next": following,
            "worker_id": self.source.worker_id,
            "as_of": self.source.freshness(partition),
        }

    def _load_local(self, partition: int, run_id: str) -> tuple[bool, RunState | None]:
        """(owned, the run) from the local store (a reader thread)."""
        with self.source.reading(partition) as reader:
            if reader is None:
                return False, None
            return True, load_run(reader, run_id)

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a reader thread: the event loop goes on answering meanwhile."""
        if self._readers is None:
            raise QueryError("the query API is stopped")
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def _forward(
        self,
        owner: str,
        path: str,
        query: Mapping[str, str],
        deadline: float,
        headers: Mapping[str, str],
    ) -> web.Response | None:
        """Ask the owner; None when it could not answer (not owner now, unreachable)."""
        assert self._session is not None
        params = {**query, "local": "1"}
        params["timeout"] = f"{max(deadline - time.monotonic(), 0.0):.3f}"
        url = owner.rstrip("/") + path
        try:
            async with self._session.get(url, params=params, headers=headers) as resp:
                body = await resp.read()
                if resp.status == 503:
                    return None
                return web.Response(body=body, status=resp.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("forwarding to %s failed: %s", owner, exc)
            return None

    async def partition_runs(self, request: web.Request) -> web.Response:
        try:
            partition = int(request.match_info["partition"])
            flt = RunFilter.from_query(request.query)
            limit = _limit(request.query)
            now = _now(request.query)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        after = request.query.get("after") or None
        page = await self._read(
            self._local_page, partition, flt, now, after, limit, self._opener(request)
        )
        if page is None:
            return _error(
                503,
                "not_owner",
                f"worker {self.source.worker_id} does not own partition {partition}",
                partition=partition,
            )
        if isinstance(page, str):
            return _error(400, "bad_request", page)
        return _json_text(await self._read(json.dumps, {**page, "partition": partition}))

    async def list_runs(self, request: web.Request) -> web.Response:
        try:
            flt = RunFilter.from_query(request.query)
            limit = _limit(request.query)
            cursor = request.query.get("after")
            partition, inner = decode_cursor(cursor) if cursor else (0, None)
        except ValueError as exc:
            return _error(400, "bad_request", str(exc))
        # One "now" for the whole listing, so overdue/idle_for do not shift between pages.
        now = datetime.now(UTC)
        runs: list[dict[str, Any]] = []
        as_of: dict[str, Any] = {}
        errors: list[str] = []
        missing: list[int] = []
        workers: set[str] = set()
        next_cursor: str | None = None
        total = self.source.partitions
        while partition < total and len(runs) < limit:
            page = await self._partition_page(
                partition, flt, now, inner, limit - len(runs), request
            )
            if isinstance(page, str):
                errors.append(f"partition {partition}: {page}")
                missing.append(partition)
                if next_cursor is None:
                    next_cursor = encode_cursor(partition, inner)
                partition, inner = partition + 1, None
                continue
            runs.extend(page["runs"])
            workers.add(page["worker_id"])
            as_of[str(partition)] = page.get("as_of")
            if page["next"] is not None:
                inner = page["next"]
                continue
            partition, inner = partition + 1, None
        if next_cursor is None and partition < total:
            next_cursor = encode_cursor(partition, inner)
        body = {
            "runs": runs,
            "count": len(runs),
            "next": next_cursor,
            "workers": sorted(workers),
            "complete": not missing,
            "missing_partitions": missing,
            "errors": errors,
            "as_of": as_of,
        }
        return _json_text(await self._read(json.dumps, body))

    async def _partition_page(
        self,
        partition: int,
        flt: RunFilter,
        now: datetime,
        after: str | None,
        limit: int,
        request: web.Request,
    ) -> dict[str, Any] | str:
        """One partition's page, from the local store or its owner; a string says why not."""
        headers = _auth_of(request)
        page = await self._read(
            self._local_page, partition, flt, now, after, limit, self._opener(request)
        )
        if page is not None:
            return page
        owner = self.owners.owner_url(partition)
        if owner is None or owner.rstrip("/") == self.url:
            return "no worker owns it now (rebalancing?)"
        assert self._session is not None
        params = {
            **flt.as_query(),
            "limit": str(limit),
            "now": now.isoformat(),
            **({"after": after} if after else {}),
            **({"personal": "sealed"} if request.query.get("personal") == "sealed" else {}),
        }
        url = f"{owner.rstrip('/')}/partitions/{partition}/runs"
        try:
            async with self._session.get(
                url, params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                if resp.status != 200:
                    return f"{owner} answered HTTP {resp.status}"
                body: dict[str, Any] = await resp.json()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{owner} unreachable: {exc}"


def _unknown_run(run_id: str) -> web.Response:
    return _error(
        404,
        "unknown_run",
        f"no run {run_id!r} in the hot store; check the id, or pass"
        " min_partition/min_offset to wait for a run just started. A finished run"
        " leaves the store after RUNSTATE_RUNTIME_FINISHED_HOT_S (30 days by default):"
        f" `runstate replay --run {run_id} --policy POLICY --history` rebuilds it",
        run_id=run_id,
    )


def _auth_of(request: web.Request) -> dict[str, str]:
    """The caller's credentials, passed on when another worker must answer."""
    auth = request.headers.get("Authorization")
    return {} if auth is None else {"Authorization": auth}


def _json_text(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")


def _opt_int(text: str | None) -> int | None:
    return None if text in (None, "") else int(text)


def _now(query: Mapping[str, str]) -> datetime:
    text = query.get("now")
    if not text:
        return datetime.now(UTC)
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _caught_up(
    done: int | None, state: RunState | None, partition: int, wanted: int, offset: int
) -> bool:
    """Whether ``offset`` of partition ``wanted`` is committed: the run's own state holds
    it, or the worker had committed past it (``done``) before the state was read."""
    if (
        state is not None
        and wanted == partition
        and state.last_offset is not None
        and state.last_offset >= offset
    ):
        return True
    return done is not None and done >= offset
