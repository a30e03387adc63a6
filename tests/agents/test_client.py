"""The SDK's HTTP reader against a tiny stand-in query API (what a worker answers mid-rebalance)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runstate.agents import HttpRunStateReader
from runstate.errors import QueryError
from runstate.processors.state import StepPhase

PARTIAL: dict[str, Any] = {
    "runs": [],
    "count": 0,
    "complete": False,
    "missing_partitions": [2],
    "errors": ["http://127.0.0.1:1: unreachable"],
}


class _StandIn(ThreadingHTTPServer):
    queries: list[dict[str, str]]


class _PartialAnswer(BaseHTTPRequestHandler):
    server: _StandIn

    def do_GET(self) -> None:
        self.server.queries.append(
            dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        )
        body = json.dumps(PARTIAL).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[_StandIn]:
    server = _StandIn(("127.0.0.1", 0), _PartialAnswer)
    server.queries = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def partial_api(stand_in: _StandIn) -> str:
    return f"http://127.0.0.1:{stand_in.server_address[1]}"


def test_a_partial_list_is_refused_only_when_completeness_is_required(partial_api: str) -> None:
    reader = HttpRunStateReader(partial_api)
    assert reader.list(status="in_progress") == []
    with pytest.raises(QueryError, match=r"partitions \[2\] are missing"):
        reader.list(status="in_progress", require_complete=True)


def test_list_sends_step_phase_and_idle_for_as_the_api_spells_them(
    stand_in: _StandIn, partial_api: str
) -> None:
    reader = HttpRunStateReader(partial_api)
    reader.list(step="score", phase=StepPhase.RETRY_SCHEDULED, idle_for=timedelta(minutes=90))
    reader.list(phase="failed", idle_for="2h")
    assert stand_in.queries == [
        {"step": "score", "phase": "retry_scheduled", "idle_for": "1h30m"},
        {"phase": "failed", "idle_for": "2h"},
    ]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"phase": "stuck"}, "unknown phase 'stuck'; one of running"),
        ({"idle_for": "7200"}, "'7200' is not a duration"),
        ({"idle_for": timedelta()}, "longer than zero"),
    ],
)
def test_list_refuses_bad_filters_before_asking(
    stand_in: _StandIn, partial_api: str, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HttpRunStateReader(partial_api).list(**filters)
    assert stand_in.queries == []
