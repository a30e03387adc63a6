"""A real, tiny side-effect service that counts what it is asked to do.

The demo, the SDK tests and the fault battery send their "emails", "notifications" and
"scoring" calls here instead of to a mock, so "the step ran once" is checked where it matters:
at the receiving end, over a real socket, across agent processes that crash and restart.

HTTP API (JSON, on 127.0.0.1, stdlib server in a daemon thread):

* ``POST /effects/{kind}`` with an optional ``Idempotency-Key`` header performs an effect and
  answers ``{"external_id": ..., "replayed": bool}``. With ``honour_keys=True`` (the
  idempotent-key mode, like a payment API) a key seen before returns the first effect's id and
  performs nothing; with ``honour_keys=False`` (the no-key mode, like plain SMTP) every request
  is a new effect - the key is then only a label for counting. Tests of the SDK's own ledger
  use the no-key mode, or the service would hide a duplicate call.
* ``GET /effects/{kind}/{key}`` answers the first effect for that key (404 if none): the
  lookup a ``reconcile`` callback uses after a crash.
* ``GET /counts`` answers ``{kind: {key: {"requests": n, "effects": m}}}`` (key ``"-"`` when
  none was sent).
* ``POST /faults`` with ``{"kind", "count", "mode": "timeout"|"reject"|"empty", "delay_s"}``
  makes the next ``count`` calls of ``kind`` fail: ``timeout`` performs the effect and then
  answers only after ``delay_s`` (past the client's timeout: the worst case, done but not
  confirmed), ``reject`` answers 422 without an effect, ``empty`` answers 200 with no body.
* ``POST /reset`` forgets everything.

Run it alone with ``python -m runstate.testing.effects --port 8099 [--no-keys]``.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote

from runstate.errors import StepAttemptFailed
from runstate.schemas.events import FailureReason

__all__ = ["EffectCount", "EffectReceipt", "EffectsClient", "EffectsService"]

_NO_KEY = "-"


@dataclass(frozen=True, slots=True)
class EffectReceipt:
    """The service's answer to one request."""

    external_id: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class EffectCount:
    """How often one (kind, key) was requested, and how many effects that caused."""

    requests: int
    effects: int


@dataclass(slots=True)
class _Fault:
    count: int
    mode: str
    delay_s: float


class EffectsService:
    """The counting server. Start it (or use ``with``); ``url`` is where clients reach it."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, honour_keys: bool = True):
        self.honour_keys = honour_keys
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._effects: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._faults: dict[str, _Fault] = {}
        self._serial = 0
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EffectsService:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="effects-service", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests sleeping in a ``timeout`` fault are cut short."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> EffectsService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the service's state, also usable in-process -------------------------------------
    def counts(self) -> dict[str, dict[str, EffectCount]]:
        """Requests and effects per kind and key."""
        with self._lock:
            out: dict[str, dict[str, EffectCount]] = defaultdict(dict)
            for (kind, key), n in self._requests.items():
                out[kind][key] = EffectCount(n, len(self._effects.get((kind, key), ())))
            return dict(out)

    def fail_next(
        self, kind: str, count: int = 1, *, mode: str = "timeout", delay_s: float = 3.0
    ) -> None:
        """Make the next ``count`` calls of ``kind`` fail (see the module docstring)."""
        if mode not in ("timeout", "reject", "empty"):
            raise ValueError(f"unknown fault mode {mode!r}; use timeout, reject or empty")
        with self._lock:
            self._faults[kind] = _Fault(count, mode, delay_s)

    def reset(self) -> None:
        """Forget every count, effect and fault."""
        with self._lock:
            self._requests.clear()
            self._effects.clear()
            self._faults.clear()

    def _perform(self, kind: str, key: str | None) -> tuple[int, dict[str, Any] | None, float]:
        """Count and maybe perform; returns (status, body, delay before answering)."""
        label = key or _NO_KEY
        with self._lock:
            self._requests[(kind, label)] += 1
            fault = self._faults.get(kind)
            mode = None
            if fault is not None and fault.count > 0:
                fault.count -= 1
                mode = fault.mode
            if mode == "reject":
                return 422, {"error": "rejected by service (injected fault)"}, 0.0
            done = self._effects.get((kind, label))
            if key is not None and self.honour_keys and done:
                return 200, {"external_id": done[0], "replayed": True}, 0.0
            self._serial += 1
            external_id = f"{kind}-{self._serial:05d}"
            self._effects[(kind, label)].append(external_id)
        if mode == "empty":
            return 200, None, 0.0
        delay = fault.delay_s if mode == "timeout" and fault is not None else 0.0
        return 200, {"external_id": external_id, "replayed": False}, delay

    def _lookup(self, kind: str, key: str) -> str | None:
        with self._lock:
            done = self._effects.get((kind, key))
            return done[0] if done else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints its own timeline."""

            def _answer(self, status: int, body: Any | None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (an injected timeout): that is the point

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                loaded = json.loads(raw) if raw else {}
                return loaded if isinstance(loaded, dict) else {}

            def do_GET(self) -> None:
                parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
                if parts == ["counts"]:
                    counts = {
                        kind: {
                            k: {"requests": c.requests, "effects": c.effects}
                            for k, c in keys.items()
                        }
                        for kind, keys in service.counts().items()
                    }
                    self._answer(200, counts)
                elif len(parts) == 3 and parts[0] == "effects":
                    found = service._lookup(parts[1], parts[2])
                    if found is None:
                        self._answer(404, {"error": "no effect with this key"})
                    else:
                        self._answer(200, {"external_id": found})
                else:
                    self._answer(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
                body = self._body()
                if len(parts) == 2 and parts[0] == "effects":
                    status, answer, delay = service._perform(
                        parts[1], self.headers.get("Idempotency-Key")
                    )
                    if delay and service._stopping.wait(delay):
                        return
                    self._answer(status, answer)
                elif parts == ["faults"]:
                    try:
                        service.fail_next(
                            str(body["kind"]),
                            int(body.get("count", 1)),
                            mode=str(body.get("mode", "timeout")),
                            delay_s=float(body.get("delay_s", 3.0)),
                        )
                    except (KeyError, ValueError) as exc:
                        self._answer(400, {"error": str(exc)})
                        return
                    self._answer(200, {"ok": True})
                elif parts == ["reset"]:
                    service.reset()
                    self._answer(200, {"ok": True})
                else:
                    self._answer(404, {"error": f"no route {self.path}"})

        return Handler


class EffectsClient:
    """Calls an :class:`EffectsService` over HTTP; failures come back as the article's reasons.

    ``perform`` raises :class:`~runstate.errors.StepAttemptFailed` with ``timeout``,
    ``rejected_by_service`` or ``empty_response``, so a durable step body can let it
    propagate and the step's retry policy decides by reason.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def perform(
        self,
        kind: str,
        *,
        key: str | None = None,
        payload: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> EffectReceipt:
        """Ask for one effect of ``kind``; ``key`` goes in the ``Idempotency-Key`` header.

        Raises:
            StepAttemptFailed: no answer within the timeout (``timeout``; the effect may have
                happened), a 4xx/5xx (``rejected_by_service``) or an empty body
                (``empty_response``).
        """
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(
            f"{self.base_url}/effects/{quote(kind, safe='')}",
            data=json.dumps(payload or {}).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as resp:
                raw = resp.read()
        except TimeoutError as exc:
            raise StepAttemptFailed(
                FailureReason.TIMEOUT, f"{kind}: no answer in time; it may have happened"
            ) from exc
        except urllib.error.HTTPError as exc:
            raise StepAttemptFailed(
                FailureReason.REJECTED_BY_SERVICE, f"{kind}: HTTP {exc.code}"
            ) from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise StepAttemptFailed(FailureReason.TIMEOUT, f"{kind}: {exc.reason}") from exc
            raise StepAttemptFailed(FailureReason.OTHER, f"{kind}: {exc.reason}") from exc
        if not raw:
            raise StepAttemptFailed(FailureReason.EMPTY_RESPONSE, f"{kind}: empty answer")
        answer = json.loads(raw)
        return EffectReceipt(str(answer["external_id"]), bool(answer.get("replayed", False)))

    def lookup(self, kind: str, key: str) -> str | None:
        """The external id of the first effect with ``key``, or None: for ``reconcile``."""
        try:
            answer = self._json("GET", f"/effects/{quote(kind, safe='')}/{quote(key, safe='')}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return str(answer["external_id"])

    def counts(self) -> dict[str, dict[str, EffectCount]]:
        """Requests and effects per kind and key, as the service counted them."""
        answer = self._json("GET", "/counts")
        return {
            kind: {k: EffectCount(int(c["requests"]), int(c["effects"])) for k, c in keys.items()}
            for kind, keys in answer.items()
        }

    def fail_next(
        self, kind: str, count: int = 1, *, mode: str = "timeout", delay_s: float = 3.0
    ) -> None:
        """Make the next ``count`` calls of ``kind`` fail (see the module docstring)."""
        self._json(
            "POST", "/faults", {"kind": kind, "count": count, "mode": mode, "delay_s": delay_s}
        )

    def reset(self) -> None:
        """Forget every count, effect and fault."""
        self._json("POST", "/reset", {})

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
            return json.loads(resp.read() or b"null")


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; prints the URL first so a parent process can read it."""
    parser = argparse.ArgumentParser(description="the counting side-effect service")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-keys", action="store_true", help="ignore Idempotency-Key")
    args = parser.parse_args(argv)
    service = EffectsService(port=args.port, honour_keys=not args.no_keys)
    print(service.url, flush=True)
    try:
        service._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


if __name__ == "__main__":
    main()
