"""`runstate runs list` filters against a stand-in query API that records what it was asked.

The real worker answering these filters is covered in ``tests/runtime/test_query_api.py``
and ``tests/runtime/test_worker_queries.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from runstate.cli import app as cli
from tests.stand_in_api import StandInApi, stand_in_api

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


@pytest.fixture
def api() -> Iterator[StandInApi]:
    with stand_in_api({"runs": [RUN], "count": 1, "complete": True}) as server:
        yield server


def test_list_passes_step_phase_and_idle_for_to_the_api(api: StandInApi) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "runs", "list", "--step", "score", "--phase", "retry_scheduled",
            "--idle-for", "2h", "--status", "in_progress", "--url", api.url,
        ],
        env={"COLUMNS": "160"},  # rich truncates cells to fit; a wide terminal shows them whole
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert api.queries == [
        {
            "step": "score",
            "phase": "retry_scheduled",
            "idle_for": "2h",
            "status": "in_progress",
            "limit": "500",
        }
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
    api: StandInApi, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["runs", "list", *args, "--url", api.url])
    assert result.exit_code == 2
    assert message in result.output
    assert api.queries == []


def test_list_help_names_the_new_filters_and_the_time_field() -> None:
    result = CliRunner().invoke(cli, ["runs", "list", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("--step", "--phase", "retry_scheduled", "--idle-for", "15m", "updated_at"):
        assert needle in text, needle


def _page(run_ids: list[str], next_cursor: str | None, **extra: object) -> dict[str, object]:
    runs = [dict(RUN, run_id=r) for r in run_ids]
    return {"runs": runs, "count": len(runs), "next": next_cursor, "complete": True, **extra}


def test_list_follows_the_pages_to_the_end() -> None:
    pages = [_page(["run-1", "run-2"], "c1"), _page(["run-3"], "c2"), _page(["run-4"], None)]
    with stand_in_api(*pages) as api:
        result = CliRunner().invoke(
            cli, ["runs", "list", "--json", "--url", api.url], env={"COLUMNS": "160"}
        )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [r["run_id"] for r in body["runs"]] == ["run-1", "run-2", "run-3", "run-4"]
    assert body["count"] == 4 and body["complete"] and body["next"] is None
    assert [q.get("after") for q in api.queries] == [None, "c1", "c2"]


def test_list_limit_stops_early_and_says_more_match() -> None:
    pages = [_page(["run-1", "run-2"], "c1"), _page(["run-3"], None)]
    with stand_in_api(*pages) as api:
        result = CliRunner().invoke(
            cli, ["runs", "list", "--limit", "2", "--url", api.url], env={"COLUMNS": "160"}
        )
    assert result.exit_code == 0, result.output
    assert "run-1" in result.output and "run-3" not in result.output
    assert "more runs match than --limit 2" in result.output
    assert [q["limit"] for q in api.queries] == ["2"]


def test_list_stops_at_a_page_missing_partitions_and_says_so() -> None:
    # The cursor of an incomplete page points back at the missing partition: following it
    # would list the later partitions' runs again.
    pages = [
        _page(["run-1"], "back-to-2", complete=False, missing_partitions=[2]),
        _page(["run-1"], None),
    ]
    with stand_in_api(*pages) as api:
        result = CliRunner().invoke(
            cli, ["runs", "list", "--json", "--url", api.url], env={"COLUMNS": "160"}
        )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [r["run_id"] for r in body["runs"]] == ["run-1"]
    assert not body["complete"] and body["missing_partitions"] == [2]
    assert len(api.queries) == 1
