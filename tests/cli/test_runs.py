"""`runstate runs list` filters against a stand-in query API that records what it was asked.

The real worker answering these filters is covered in ``tests/processors/test_query_api.py``.
"""

from __future__ import annotations

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
