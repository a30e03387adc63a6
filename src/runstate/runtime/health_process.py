"""``python -m runstate.runtime.health_process``: a worker's ``/health``, in a process of its own.

Started and watched by the worker (:mod:`runstate.runtime.health_supervisor`), never by hand.
It reads the worker's status board (:mod:`runstate.runtime.health_board`, a shared mapping
whose descriptor it inherits) and shares no GIL with the worker's poll loop, so its answers
do not wait while the loop works or while the scheduler has taken the core from it.

``GET /health``: the JSON the worker's own ``/health`` gives, plus ``stalled`` and
``status_age_s``; 200, or 503 when stalled (the loop has not polled for ``--stall-s`` and the
worker gives no reason, or the worker's process published nothing for that long). With
``?ready=true`` also 503 until the worker is ready. Anything else: 404.

It ends when the worker does: its end of a pipe from the worker reads end-of-file once the
worker's process is gone (kill -9 included), and on Linux the kernel also sends it SIGTERM
then (``PR_SET_PDEATHSIG``).

Only the standard library and :mod:`runstate.runtime.health_board`: it starts in tens of
milliseconds, not the second the runtime's imports take.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runstate.runtime.health_board import BoardReader, health_body

__all__ = ["answer", "main"]

#: exit code when the port cannot be bound (the supervisor then waits before trying again)
EXIT_NO_PORT = 3
_PR_SET_PDEATHSIG = 1


def answer(
    reader: BoardReader, *, stall_s: float, wants_ready: bool, now: float | None = None
) -> tuple[int, dict[str, Any]]:
    """The status code and body of one ``/health``."""
    view = reader.read()
    now = time.monotonic() if now is None else now
    if view is None:  # the worker publishes before it starts this process; never seen
        return 503, {"ready": False, "degraded": True, "stalled": True, "broker_error": None}
    body = health_body(
        view.status,
        loop_age_s=max(0.0, now - view.heartbeat),
        status_age_s=max(0.0, now - view.published),
        uptime_s=max(0.0, now - view.started),
        stall_s=stall_s,
    )
    if now - view.published > stall_s:  # the worker's process stands still
        body["stalled"] = body["degraded"] = True
    failed = body["stalled"] or (wants_ready and not body["ready"])
    return (503 if failed else 200), body


def _handler(reader: BoardReader, stall_s: float) -> type[BaseHTTPRequestHandler]:
    class Health(BaseHTTPRequestHandler):
        server_version = "runstate-health"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/health":
                self._send(404, {"error": f"{parts.path} not found; this port serves /health"})
                return
            ready = parse_qs(parts.query).get("ready", [""])[0].lower() in ("1", "true", "yes")
            self._send(*answer(reader, stall_s=stall_s, wants_ready=ready))

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would fill the worker's log; nothing is logged."""

    return Health


class _ServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _die_with_parent(parent_fd: int) -> None:
    """Exit once the worker is gone: its end of the pipe closes (every platform), and on
    Linux the kernel sends SIGTERM when the thread that started us ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # the pipe below is enough
    if os.getppid() == 1:  # the worker died before we got here
        os._exit(0)

    def watch() -> None:
        while True:
            try:
                if not os.read(parent_fd, 64):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runstate.runtime.health_process")
    parser.add_argument("--board-fd", type=int, required=True, help="the status board")
    parser.add_argument("--parent-fd", type=int, required=True, help="EOF: the worker is gone")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stall-s", type=float, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_fd)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    reader = BoardReader(args.board_fd)
    try:
        server_class = _ServerV6 if ":" in args.host else ThreadingHTTPServer
        server = server_class((args.host.strip("[]"), args.port), _handler(reader, args.stall_s))
    except OSError as exc:
        print(
            f"runstate health: cannot listen on {args.host}:{args.port} ({exc.strerror});"
            " free the port or set RUNSTATE_RUNTIME_HEALTH_PORT",
            file=sys.stderr,
        )
        return EXIT_NO_PORT
    server.daemon_threads = True
    server.serve_forever(poll_interval=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
