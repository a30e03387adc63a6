"""The SDK's HTTP reader against a tiny stand-in query API (what a worker answers mid-rebalance)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runstate.agents import HttpRunStateReader
from runstate.errors import QueryError

PARTIAL: dict[str, Any] = {
    "runs": [],
    "count": 0,
    "complete": False,
    "missing_partitions": [2],
    "errors": ["http://127.0.0.1:1: unreachable"],
}


class _PartialAnswer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(PARTIAL).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def partial_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PartialAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_partial_list_is_refused_only_when_completeness_is_required(partial_api: str) -> None:
    reader = HttpRunStateReader(partial_api)
    assert reader.list(status="in_progress") == []
    with pytest.raises(QueryError, match=r"partitions \[2\] are missing"):
        reader.list(status="in_progress", require_complete=True)
