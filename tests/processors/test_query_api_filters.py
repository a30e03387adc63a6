"""``GET /runs`` filters through the aiohttp handler, with a small in-process directory (no Kafka).

The fan-out across real workers is covered in ``test_query_api.py``; here one worker owns
every partition, so the answer is what its own filter selects, and bad values are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import test_utils

from runstate.processors.query_api import QueryServer
from runstate.runs.state import RunState, RunStatus, StepPhase
from tests.runs.conftest import RunStateFactory


class OneWorker:
    """A :class:`~runstate.processors.query_api.RunDirectory` owning every partition."""

    worker_id = "w1"
    url = "http://w1"
    partitions = 2
    default_timeout_s = 1.0

    def __init__(self, states: list[RunState]) -> None:
        self.states = states

    def owns(self, partition: int) -> bool:
        return True

    def owner_url(self, partition: int) -> str | None:
        return self.url

    def member_urls(self) -> list[str]:
        return [self.url]

    def owned_partitions(self) -> list[int]:
        return [0, 1]

    def read(self, run_id: str) -> RunState | None:
        return next((s for s in self.states if s.run_id == run_id), None)

    def local_runs(self) -> Iterable[RunState]:
        return self.states

    def processed_through(self, partition: int) -> int | None:
        return None

    async def wait_processed(self, partition: int, offset: int, timeout_s: float) -> bool:
        return False

    def health(self) -> dict[str, Any]:
        return {}

    def metrics(self) -> dict[str, Any]:
        return {}


def _get(directory: OneWorker, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async def ask() -> tuple[int, dict[str, Any]]:
        server = QueryServer(directory, host="127.0.0.1", port=0)
        async with test_utils.TestClient(test_utils.TestServer(server.build())) as client:
            resp = await client.get("/runs", params=query)
            body: dict[str, Any] = await resp.json()
            return resp.status, body

    return asyncio.run(ask())


@pytest.fixture
def worker(run_state_factory: RunStateFactory) -> OneWorker:
    now = datetime.now(UTC)
    base = run_state_factory(status=RunStatus.IN_PROGRESS, step_index=0, step_attempt=1)
    return OneWorker(
        [
            replace(
                base,
                run_id="fresh-retry",
                current_step="score",
                step_phase=StepPhase.RETRY_SCHEDULED,
                updated_at=now,
            ),
            replace(
                base,
                run_id="old-retry",
                current_step="score",
                step_phase=StepPhase.RETRY_SCHEDULED,
                updated_at=now - timedelta(hours=3),
            ),
            replace(
                base,
                run_id="old-running",
                current_step="collect",
                step_phase=StepPhase.RUNNING,
                updated_at=now - timedelta(days=2),
            ),
        ]
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"phase": "retry_scheduled"}, ["fresh-retry", "old-retry"]),
        ({"step": "collect"}, ["old-running"]),
        ({"idle_for": "2h"}, ["old-retry", "old-running"]),
        ({"idle_for": "1d", "status": "in_progress"}, ["old-running"]),
        ({"phase": "retry_scheduled", "idle_for": "90m", "step": "score"}, ["old-retry"]),
        ({"phase": "failed"}, []),
    ],
)
def test_list_selects_by_step_phase_and_idle_time(
    worker: OneWorker, query: dict[str, str], expected: list[str]
) -> None:
    status, body = _get(worker, query)
    assert status == 200, body
    assert sorted(r["run_id"] for r in body["runs"]) == expected
    assert body["complete"] and body["count"] == len(expected)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"phase": "waiting"},
            "unknown phase 'waiting'; one of running, completed, failed, retry_scheduled",
        ),
        ({"idle_for": "7200"}, "idle_for: '7200' is not a duration; write a number with a unit"),
        ({"idle_for": "0m"}, "a duration must be longer than zero"),
    ],
)
def test_a_bad_filter_value_is_a_400_saying_what_is_accepted(
    worker: OneWorker, query: dict[str, str], message: str
) -> None:
    status, body = _get(worker, query)
    assert status == 400
    assert body["error"] == "bad_request" and message in body["message"]
