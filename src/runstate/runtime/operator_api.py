"""Authentication of the query API, and its decision and operator endpoints.

**Authentication.** With an identity directory (``RUNSTATE_AUTH_FILE``) every endpoint but
``/health`` needs ``Authorization: Bearer <token>``; without one, the worker runs in local
development mode, says so loudly at start-up, and refuses to listen beyond loopback unless
``RUNSTATE_AUTH_DEV=1`` says that is meant (:func:`auth_mode`). Workers forward a request to
another worker with the caller's own header, so every worker must share the identity file.

**Commands** (``POST /runs/{run_id}/<command>``, JSON body, as the principal of the token):

* ``approve`` / ``reject``: ``comment``/``reason``, ``subject_hash``, ``override_reason``;
  only the requested approver, a member of the requested group, or an admin with a reason;
* ``cancel`` (``reason``), ``retry-step`` (``step``, ``reason``), ``resolve-action``
  (``key``, ``found``: external id or null, ``reason``): the ``operator`` or ``admin`` role.

Each reads the run through this API (any worker routes to the owner), judges the event with
the reducer's own rules (:func:`runstate.runs.reducer.apply`): a refusal is HTTP 403 (who)
or 409 (the run's state) with the reason, and nothing is sent. Else it sends the event and
reads the run again at the event's offset: 200 with the run when applied, 409 when the
processor refused it after all (a race). In local development mode the body's ``by`` names
the actor, unchecked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from runstate.errors import ConfigError
from runstate.identity import Directory, Principal, Role
from runstate.runs.reducer import RejectCode, Rejected, apply, decider_refused
from runstate.runs.run_view import state_from_json
from runstate.runs.state import ApprovalOutcome, RunState
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ApprovalRejected,
    ExternalActionResolved,
    RunCancelled,
    StepRetryRequested,
)
from runstate.schemas.sealed import subject_of
from runstate.streams.producer import EventProducer

__all__ = ["CommandRoutes", "auth_middleware", "auth_mode"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PRINCIPAL = web.RequestKey("principal", Principal)
_OPEN_PATHS = frozenset({"/health"})


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def auth_mode(directory: Directory | None, *, host: str, dev: bool) -> str:
    """Say at start-up how the API authenticates; refuse an open API beyond loopback.

    Raises:
        ConfigError: no identity file, listening on a non-loopback interface, and no
            ``RUNSTATE_AUTH_DEV=1``.
    """
    if directory is not None:
        log.info("query API: bearer tokens required (every endpoint but /health)")
        return "tokens"
    if not _loopback(host) and not dev:
        raise ConfigError(
            f"the query API would listen on {host} with no authentication: set"
            " RUNSTATE_AUTH_FILE (an identity file, see examples/identities.toml), or"
            " RUNSTATE_AUTH_DEV=1 for local development"
        )
    log.warning(
        "!!! query API AUTHENTICATION OFF (local development mode): anyone who reaches %s can"
        " read runs, decide approvals and give operator commands; set RUNSTATE_AUTH_FILE !!!",
        host,
    )
    return "dev"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_middleware(directory: Directory | None) -> Any:
    """aiohttp middleware: 401 without a known bearer token (unless development mode)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if directory is None or request.path in _OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(
                401,
                "unauthenticated",
                "this API needs 'Authorization: Bearer <token>' (set RUNSTATE_TOKEN)",
            )
        principal = directory.authenticate(token.strip())
        if principal is None:
            return _error(401, "unauthenticated", "unknown token; ask an admin for one")
        request[PRINCIPAL] = principal
        return await handler(request)

    return authenticate


class CommandRoutes:
    """The POST endpoints; they send events with their own producer.

    Args:
        producer: sends the events (an idempotent producer; one per worker).
        self_url: this worker's API, through which runs are read (any worker routes).
        timeout_s: how long to wait for the processor to apply a command.
    """

    def __init__(self, producer: EventProducer, self_url: str, *, timeout_s: float = 10.0):
        self.producer = producer
        self.self_url = self_url.rstrip("/")
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None

    def register(self, app: web.Application) -> None:
        for name in ("approve", "reject", "cancel", "retry-step", "resolve-action"):
            app.router.add_post(f"/runs/{{run_id}}/{name}", self._handler(name))
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
        await asyncio.get_running_loop().run_in_executor(None, self.producer.close, 5.0)

    def _handler(self, name: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.json() if request.can_read_body else {}
            except json.JSONDecodeError:
                return _error(400, "bad_request", "the body must be a JSON object")
            if not isinstance(body, dict):
                return _error(400, "bad_request", "the body must be a JSON object")
            principal = request.get(PRINCIPAL)
            if principal is None:
                by = body.get("by")
                if not isinstance(by, str) or not by:
                    return _error(400, "bad_request", "development mode: name the actor in 'by'")
                principal = Principal(by, roles=frozenset({Role.OPERATOR, Role.APPROVER}))
            return await self._command(request, name, request.match_info["run_id"], principal, body)

        return handle

    async def _command(
        self, request: web.Request, name: str, run_id: str, who: Principal, body: dict[str, Any]
    ) -> web.Response:
        auth = request.headers.get("Authorization")
        state = await self._read(run_id, auth, None)
        if state is None:
            return _error(404, "unknown_run", f"no run {run_id!r}; check the run id")
        try:
            cls, fields = _event_of(name, state, who, body)
        except _Refused as refused:
            return _error(refused.status, refused.error, str(refused))
        event = self.producer.new_event(cls, run_id, data_subject=subject_of(state.input), **fields)
        judged = apply(state, event)
        if isinstance(judged, Rejected):
            status = 403 if judged.code is RejectCode.NOT_AUTHORIZED else 409
            return _error(status, judged.code.value, judged.reason)
        delivery = await asyncio.get_running_loop().run_in_executor(None, self._emit, event)
        after = await self._read(run_id, auth, (delivery.partition, delivery.offset))
        if after is None or not after.saw_event(event.event_id):
            return _error(
                409,
                "refused_by_processor",
                f"the processor did not apply {event.event_type} {event.event_id} (the run"
                " changed in between); see the run and the dead letters",
            )
        return web.json_response(
            {
                "run_id": run_id,
                "event_type": event.event_type,
                "event_id": event.event_id,
                "by": who.name,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "status": after.status.value,
            }
        )

    def _emit(self, event: AgentEvent) -> Any:
        with self._lock:
            return self.producer.emit(event)

    async def _read(
        self, run_id: str, auth: str | None, after: tuple[int, int] | None
    ) -> RunState | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        # As written: the subject of a sealed input names the key a comment is sealed with.
        params = {"timeout": str(self.timeout_s), "personal": "sealed"}
        if after is not None:
            params.update(min_partition=str(after[0]), min_offset=str(after[1]))
        headers = {} if auth is None else {"Authorization": auth}
        url = f"{self.self_url}/runs/{run_id}"
        async with self._session.get(url, params=params, headers=headers) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise web.HTTPServiceUnavailable(
                    text=json.dumps({"error": "unreadable", "message": await resp.text()}),
                    content_type="application/json",
                )
            return state_from_json(await resp.json())


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _Refused(400, "bad_request", f"{key!r} must be a string")
    return value


def _event_of(
    name: str, state: RunState, who: Principal, body: dict[str, Any]
) -> tuple[type[AgentEvent], dict[str, Any]]:
    """The event a command sends, or why it may not be sent."""
    run = state.run_id
    if name in ("approve", "reject"):
        return _decision(name == "approve", state, who, body)
    if not who.has(Role.OPERATOR):
        raise _Refused(
            403, "not_authorized", f"{who.name!r} may not {name} run {run!r}: needs operator"
        )
    reason = _text(body, "reason")
    if name == "cancel":
        if not (reason or "").strip():
            raise _Refused(400, "bad_request", "cancel needs a 'reason'")
        return RunCancelled, {"by": who.name, "reason": reason}
    if name == "retry-step":
        step = _text(body, "step") or state.current_step or "?"
        return StepRetryRequested, {"by": who.name, "step": step, "reason": reason}
    key = _text(body, "key")
    if not key:
        raise _Refused(400, "bad_request", "resolve-action needs the action's 'key'")
    found = _text(body, "found")
    return ExternalActionResolved, {
        "by": who.name,
        "idempotency_key": key,
        "found": found is not None,
        "external_id": found,
        "reason": reason,
    }


def _decision(
    grant: bool, state: RunState, who: Principal, body: dict[str, Any]
) -> tuple[type[AgentEvent], dict[str, Any]]:
    a = state.approval
    override = _text(body, "override_reason")
    if a is not None and a.outcome is ApprovalOutcome.PENDING:
        expected = _text(body, "subject_hash")
        if expected is not None and expected != a.subject_hash:
            raise _Refused(
                409,
                "stale_subject",
                f"the subject changed since it was shown (you saw {expected}, it is now"
                f" {a.subject_hash}); review it and decide again",
            )
        # Checked whether or not the request enforces it: this API knows who is asking.
        probe = ApprovalGranted(
            event_id="probe",
            run_id=state.run_id,
            occurred_at=a.requested_at,
            producer="api",
            by=who.name,
            subject_hash=a.subject_hash,
            by_groups=who.sorted_groups,
            by_roles=who.sorted_roles,
            override_reason=override,
        )
        refused = decider_refused(state, replace(a, enforce_decider=True), probe)
        if refused is not None:
            raise _Refused(403, "not_authorized", refused.reason)
    text = _text(body, "comment" if grant else "reason")
    if not grant and not (text or "").strip():
        raise _Refused(400, "bad_request", "reject needs a 'reason'")
    fields: dict[str, Any] = {
        "by": who.name,
        "subject_hash": a.subject_hash if a is not None else "none",
        "comment": text,
        "by_groups": who.sorted_groups,
        "by_roles": who.sorted_roles,
        "override_reason": override,
    }
    return (ApprovalGranted if grant else ApprovalRejected), fields
