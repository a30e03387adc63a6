"""A stand-in for a worker's query API: answers every GET with one JSON body (or the next of
several, the last one repeated) and records the query parameters it was asked with."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandInApi(ThreadingHTTPServer):
    bodies: list[dict[str, Any]]
    queries: list[dict[str, str]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Answer(BaseHTTPRequestHandler):
    server: StandInApi

    def do_GET(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        self.server.queries.append(dict(urllib.parse.parse_qsl(query)))
        bodies = self.server.bodies
        body = json.dumps(bodies.pop(0) if len(bodies) > 1 else bodies[0]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def stand_in_api(body: dict[str, Any], *more: dict[str, Any]) -> Iterator[StandInApi]:
    """Serve ``body`` (then each of ``more`` in turn) on 127.0.0.1 (a free port) until the
    block ends."""
    server = StandInApi(("127.0.0.1", 0), _Answer)
    server.bodies, server.queries = [body, *more], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
