"""The query client's transport against small real HTTP servers on 127.0.0.1: one pooled
connection for many calls, further tries when the worker could not be reached, none when it
was reached but was slow, and the API's errors as :class:`QueryError`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runstate.errors import QueryError, QueryUnreachable
from runstate.runs.query_client import QueryClient


class _Api(ThreadingHTTPServer):
    """Answers ``GET /ok`` with JSON and ``GET /missing`` with the API's 404; counts the
    connections it was asked on and the requests; ``/slow`` waits until released."""

    daemon_threads = True
    connections: set[tuple[str, int]]
    requests: int
    release: threading.Event

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on ``/slow`` has closed its end; that is expected here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pooled client reuses the connection
    server: _Api

    def do_GET(self) -> None:
        self.server.connections.add(self.client_address[:2])
        self.server.requests += 1
        if self.path.startswith("/slow"):
            self.server.release.wait(10)
        status, body = (
            (404, {"message": "run r-1 is not known"})
            if self.path.startswith("/missing")
            else (200, {"path": self.path})
        )
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _api() -> Iterator[_Api]:
    server = _Api(("127.0.0.1", 0), _Handler)
    server.connections, server.requests, server.release = set(), 0, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _url(server: _Api | socket.socket) -> str:
    host, port = server.server_address[:2] if isinstance(server, _Api) else server.getsockname()
    return f"http://{host}:{port}"


def test_many_calls_share_one_pooled_connection() -> None:
    with _api() as api, QueryClient(_url(api)) as client:
        for i in range(20):
            assert client.get("/ok", n=i, skipped=None) == {"path": f"/ok?n={i}"}
    assert api.requests == 20
    assert len(api.connections) == 1


def test_an_api_error_carries_its_status_and_message() -> None:
    with (
        _api() as api,
        QueryClient(_url(api)) as client,
        pytest.raises(QueryError, match="HTTP 404 run r-1 is not known") as caught,
    ):
        client.get("/missing")
    assert getattr(caught.value, "status", None) == 404
    assert not isinstance(caught.value, QueryUnreachable)


_ANSWER = b'{"path": "/ok"}'


@contextmanager
def _hanging_up(times: int) -> Iterator[tuple[socket.socket, list[int]]]:
    """A listener that reads the request on each of its first ``times`` connections and
    closes it unanswered (what a restarting worker, or a pooled connection the worker has
    closed, looks like to the client), then answers the next one."""
    listener = socket.create_server(("127.0.0.1", 0))
    hung_up: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if len(hung_up) < times:
                    hung_up.append(1)
                    continue
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(_ANSWER)}\r\nConnection: close\r\n\r\n".encode()
                    + _ANSWER
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener, hung_up
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        listener.close()
        thread.join(5)


def test_a_call_the_worker_hung_up_on_is_tried_again() -> None:
    with _hanging_up(2) as (listener, hung_up), QueryClient(_url(listener)) as client:
        client.retry_pause_s = 0.01
        assert client.get("/ok") == {"path": "/ok"}
    assert len(hung_up) == 2


def test_after_the_retries_the_worker_is_unreachable_with_one_clear_message() -> None:
    with _hanging_up(10) as (listener, hung_up), QueryClient(_url(listener), retries=3) as client:
        client.retry_pause_s = 0.01
        with pytest.raises(QueryUnreachable, match="cannot reach the query API at http://"):
            client.get("/ok")
    assert len(hung_up) == 4  # the first try and three more


def test_nothing_listening_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        url = _url(taken)  # the port is free again once closed
    with (
        QueryClient(url, retries=1, retry_pause_s=0.01) as client,
        pytest.raises(QueryUnreachable, match="RUNSTATE_QUERY_URL"),
    ):
        client.get("/health")


def test_a_worker_too_slow_to_answer_is_not_asked_again() -> None:
    with _api() as api, QueryClient(_url(api), timeout_s=2.0) as client:
        with pytest.raises(QueryUnreachable, match="ReadTimeout"):
            client.get("/slow")
        api.release.set()
    assert api.requests == 1
