"""The filters of ``GET /runs``: parsing query values, matching states, fanning out."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given

from runstate.errors import QueryError
from runstate.runs.run_view import (
    RunFilter,
    parse_idle_for,
    parse_phase,
    parse_status,
    run_to_json,
    state_from_json,
)
from runstate.runs.state import RunState, RunStatus, StepPhase
from tests.factories import T0
from tests.runs.conftest import BuilderFactory, RunStateFactory, folded
from tests.runs.test_state_codec import states


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_idle_for_reads_the_operator_forms(text: str, expected: timedelta) -> None:
    assert parse_idle_for(text) == expected


@pytest.mark.parametrize("text", ["2", "2x", "h", "0s", "-1h", "2 hours"])
def test_idle_for_refuses_what_is_not_a_positive_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"idle_for: .*(not a duration|longer than zero)"):
        parse_idle_for(text)


def test_unknown_phase_and_status_name_every_valid_value() -> None:
    with pytest.raises(ValueError) as phase:
        parse_phase("retrying")
    assert str(phase.value) == (
        "unknown phase 'retrying'; one of running, completed, failed, retry_scheduled"
    )
    with pytest.raises(ValueError, match="unknown status 'stuck'; one of created, in_progress"):
        parse_status("stuck")
    assert parse_phase(StepPhase.FAILED) is StepPhase.FAILED


def test_from_query_reads_every_filter_and_as_query_round_trips() -> None:
    query = {
        "status": "in_progress",
        "owner": "team-a",
        "approver": "managers",
        "overdue": "true",
        "step": "score",
        "phase": "retry_scheduled",
        "idle_for": "90m",
        "local": "1",  # not a filter: ignored
    }
    flt = RunFilter.from_query(query)
    assert flt == RunFilter(
        status=RunStatus.IN_PROGRESS,
        owner="team-a",
        approver="managers",
        overdue=True,
        step="score",
        phase=StepPhase.RETRY_SCHEDULED,
        idle_for=timedelta(minutes=90),
    )
    assert flt.as_query()["idle_for"] == "1h30m"
    assert RunFilter.from_query(flt.as_query()) == flt
    assert RunFilter.from_query({"step": "", "phase": "", "idle_for": ""}) == RunFilter()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"phase": "stuck"}, "unknown phase 'stuck'"),
        ({"idle_for": "7200"}, "idle_for: '7200' is not a duration"),
        ({"status": "idle"}, "unknown status 'idle'"),
    ],
)
def test_from_query_refuses_bad_values(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunFilter.from_query(query)


def test_of_takes_enum_members_or_spellings_and_timedeltas() -> None:
    assert RunFilter.of(phase="failed", idle_for=timedelta(hours=2)) == RunFilter.of(
        phase=StepPhase.FAILED, idle_for="2h"
    )
    with pytest.raises(ValueError, match="longer than zero"):
        RunFilter.of(idle_for=timedelta())


def test_step_and_phase_match_the_current_step(builder: BuilderFactory) -> None:
    b = builder()
    b.step("collect")
    b.step("score", fail_times=1, complete=False)  # attempt 2 running
    running = folded(b)
    b.fail_step("score", attempt=2)
    failed = folded(b)
    assert running.current_step == "score" and running.step_phase is StepPhase.RUNNING
    now = running.updated_at

    assert RunFilter(step="score").matches(running, now)
    assert not RunFilter(step="collect").matches(running, now)  # completed earlier, not current
    assert RunFilter(phase=StepPhase.RUNNING).matches(running, now)
    assert not RunFilter(phase=StepPhase.RUNNING).matches(failed, now)
    assert RunFilter(step="score", phase=StepPhase.FAILED).matches(failed, now)


def test_a_run_with_no_step_matches_no_step_or_phase_filter(
    run_state_factory: RunStateFactory,
) -> None:
    created = run_state_factory()
    assert created.current_step is None and created.step_phase is None
    assert not RunFilter(step="collect").matches(created, T0)
    assert not any(RunFilter(phase=p).matches(created, T0) for p in StepPhase)


def test_idle_for_compares_updated_at_inclusively(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(updated_at=T0)
    flt = RunFilter(idle_for=timedelta(hours=2))
    assert flt.matches(state, T0 + timedelta(hours=2))  # unchanged for exactly 2h
    assert flt.matches(state, T0 + timedelta(days=1))
    assert not flt.matches(state, T0 + timedelta(hours=2) - timedelta(seconds=1))


@given(states)
def test_the_json_form_reads_back_into_the_same_state(state: RunState) -> None:
    body = json.loads(json.dumps(run_to_json(state)))
    assert state_from_json(body) == state


def test_the_json_form_ignores_keys_it_does_not_know(
    run_state_factory: RunStateFactory,
) -> None:
    body = {**run_to_json(run_state_factory()), "served_by": "w1", "partition": 3}
    assert state_from_json(body) == run_state_factory()


@pytest.mark.parametrize(
    "broken",
    [{"status": "no-such-status"}, {"created_at": "yesterday"}, {"completed_steps": [{}]}],
)
def test_what_is_not_a_run_state_is_a_query_error(
    run_state_factory: RunStateFactory, broken: dict[str, object]
) -> None:
    body = {**run_to_json(run_state_factory()), **broken}
    with pytest.raises(QueryError, match="not a run state"):
        state_from_json(body)


def test_an_answer_without_the_required_fields_is_a_query_error() -> None:
    with pytest.raises(QueryError, match="not a run state"):
        state_from_json({"run_id": "r"})
