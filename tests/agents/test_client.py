"""The SDK's HTTP reader against a tiny stand-in query API (what a worker answers mid-rebalance)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from runstate.agents import HttpRunStateReader
from runstate.errors import QueryError
from runstate.runs.state import StepPhase
from tests.stand_in_api import StandInApi, stand_in_api

PARTIAL: dict[str, Any] = {
    "runs": [],
    "count": 0,
    "complete": False,
    "missing_partitions": [2],
    "errors": ["http://127.0.0.1:1: unreachable"],
}


@pytest.fixture
def stand_in() -> Iterator[StandInApi]:
    with stand_in_api(PARTIAL) as server:
        yield server


@pytest.fixture
def partial_api(stand_in: StandInApi) -> str:
    return stand_in.url


def test_a_partial_list_is_refused_only_when_completeness_is_required(partial_api: str) -> None:
    reader = HttpRunStateReader(partial_api)
    assert reader.list(status="in_progress") == []
    with pytest.raises(QueryError, match=r"partitions \[2\] are missing"):
        reader.list(status="in_progress", require_complete=True)


def test_list_sends_step_phase_and_idle_for_as_the_api_spells_them(
    stand_in: StandInApi, partial_api: str
) -> None:
    reader = HttpRunStateReader(partial_api)
    reader.list(step="score", phase=StepPhase.RETRY_SCHEDULED, idle_for=timedelta(minutes=90))
    reader.list(phase="failed", idle_for="2h")
    assert stand_in.queries == [
        {"step": "score", "phase": "retry_scheduled", "idle_for": "1h30m", "limit": "500"},
        {"phase": "failed", "idle_for": "2h", "limit": "500"},
    ]


def test_list_reads_every_page() -> None:
    pages = [
        {"runs": [], "count": 0, "next": "c1", "complete": True},
        {"runs": [], "count": 0, "next": None, "complete": True},
    ]
    with stand_in_api(*pages) as api:
        assert HttpRunStateReader(api.url).list(status="in_progress") == []
    assert [q.get("after") for q in api.queries] == [None, "c1"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"phase": "stuck"}, "unknown phase 'stuck'; one of running"),
        ({"idle_for": "7200"}, "'7200' is not a duration"),
        ({"idle_for": timedelta()}, "longer than zero"),
    ],
)
def test_list_refuses_bad_filters_before_asking(
    stand_in: StandInApi, partial_api: str, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HttpRunStateReader(partial_api).list(**filters)
    assert stand_in.queries == []
