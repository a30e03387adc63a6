"""`runstate runs list` filters against a stand-in query API that records what it was asked.

The real worker answering these filters is covered in ``tests/processors/test_query_api.py``.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from runstate.cli import app as cli

RUN = {
    "run_id": "run-7",
    "status": "in_progress",
    "owner": "team-a",
    "agent": "credit-limit",
    "current_step": "score",
    "step_phase": "retry_scheduled",
    "approval": None,
    "updated_at": "2025-03-01T09:00:00+00:00",
}


class StandIn(ThreadingHTTPServer):
    queries: list[dict[str, str]]


class _RecordingAnswer(BaseHTTPRequestHandler):
    server: StandIn

    def do_GET(self) -> None:
        query = urllib.parse.urlsplit(self.path).query
        self.server.queries.append(dict(urllib.parse.parse_qsl(query)))
        body = json.dumps({"runs": [RUN], "count": 1, "complete": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[StandIn]:
    server = StandIn(("127.0.0.1", 0), _RecordingAnswer)
    server.queries = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: StandIn) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_list_passes_step_phase_and_idle_for_to_the_api(api: StandIn) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "runs", "list", "--step", "score", "--phase", "retry_scheduled",
            "--idle-for", "2h", "--status", "in_progress", "--url", _url(api),
        ],
        env={"COLUMNS": "160"},  # rich truncates cells to fit; a wide terminal shows them whole
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.queries == [
        {"step": "score", "phase": "retry_scheduled", "idle_for": "2h", "status": "in_progress"}
    ]
    assert "run-7" in result.output and "score (retry_scheduled)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--phase", "stuck"],
            "unknown phase 'stuck'; one of running, completed, failed, retry_scheduled",
        ),
        (["--idle-for", "7200"], "'7200' is not a duration; write a number with a unit"),
        (["--idle-for", "2 hours"], "is not a duration"),
        (["--status", "stuck"], "unknown status 'stuck'; one of created, in_progress"),
    ],
)
def test_a_bad_filter_value_exits_2_before_asking_the_api(
    api: StandIn, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["runs", "list", *args, "--url", _url(api)])
    assert result.exit_code == 2
    assert message in result.output
    assert api.queries == []


def test_list_help_names_the_new_filters_and_the_time_field() -> None:
    result = CliRunner().invoke(cli, ["runs", "list", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("--step", "--phase", "retry_scheduled", "--idle-for", "15m", "updated_at"):
        assert needle in text, needle
