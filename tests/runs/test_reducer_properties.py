"""Properties of the reducer over generated agent runs with junk, duplicates and redelivery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runstate.runs.reducer import Applied, Duplicate, Rejected, apply, fold
from runstate.runs.state import (
    RECENT_EVENT_IDS_LIMIT,
    TERMINAL_STATUSES,
    TRANSITIONS,
    ApprovalOutcome,
    RunState,
    RunStatus,
)
from runstate.schemas.events import AgentEvent, RunStarted
from tests.factories import plausible_runs

Log = list[tuple[int, AgentEvent]]


def with_offsets(events: list[AgentEvent]) -> Log:
    return [(10 * i, e) for i, e in enumerate(events)]


@given(plausible_runs())
def test_fold_is_deterministic(events: list[AgentEvent]) -> None:
    assert fold(events) == fold(list(events))
    assert fold(with_offsets(events)) == fold(with_offsets(events))


@given(plausible_runs(), st.data())
def test_redelivered_offsets_change_nothing(events: list[AgentEvent], data: st.DataObject) -> None:
    """A consumer restarting from an older committed offset sees a suffix again."""
    log = with_offsets(events)
    redelivered: Log = []
    for i, item in enumerate(log):
        redelivered.append(item)
        if data.draw(st.integers(0, 4)) == 0:
            start = data.draw(st.integers(0, i))
            redelivered.extend(log[start : i + 1])
    assert fold(redelivered) == fold(log)


@given(plausible_runs(), st.data())
def test_resent_events_change_nothing(events: list[AgentEvent], data: st.DataObject) -> None:
    """A producer retry writes the same event (same id) again, at a higher offset."""
    log = with_offsets(events)
    resent = list(log)
    for offset, event in log:
        for _ in range(data.draw(st.integers(0, 2))):
            resent.append((offset + data.draw(st.integers(1, 9)), event))
    resent.sort(key=lambda item: item[0])
    assert fold(resent) == fold(log)
    assert fold([e for _, e in resent]) == fold(events)


@given(plausible_runs(junk=False), st.data())
@settings(max_examples=200)
def test_late_resent_events_of_a_valid_run_change_nothing(
    events: list[AgentEvent], data: st.DataObject
) -> None:
    """Copies arriving several events later are caught by id or by what the state holds."""
    resent = with_offsets(events)
    for i, event in enumerate(events):
        if data.draw(st.booleans()):
            later = data.draw(st.integers(i, min(i + 8, len(events) - 1)))
            resent.append((10 * later + data.draw(st.integers(1, 9)), event))
    resent.sort(key=lambda item: item[0])
    assert fold([e for _, e in resent]) == fold(events)


def check_invariants(before: RunState | None, event: AgentEvent, after: RunState) -> None:
    if before is None:
        assert isinstance(event, RunStarted)
        assert after.status is RunStatus.CREATED
    else:
        assert after.status is TRANSITIONS[type(event)][before.status]
        assert after.updated_at >= before.updated_at
        assert after.created_at == before.created_at
    pending = after.approval is not None and after.approval.outcome is ApprovalOutcome.PENDING
    if after.status not in TERMINAL_STATUSES:
        assert pending == (after.status is RunStatus.WAITING_APPROVAL)
    keys = [a.idempotency_key for a in after.external_actions]
    assert len(keys) == len(set(keys))
    requests = [m.request_id for m in after.model_calls]
    assert len(requests) == len(set(requests))
    indexes = [c.step_index for c in after.completed_steps]
    assert indexes == sorted(set(indexes))
    assert len(after.recent_event_digests) <= RECENT_EVENT_IDS_LIMIT
    assert after.saw_event(event.event_id)


@given(plausible_runs())
def test_each_outcome_keeps_versions_and_invariants(events: list[AgentEvent]) -> None:
    state: RunState | None = None
    for offset, event in with_offsets(events):
        outcome = apply(state, event, offset=offset)
        if isinstance(outcome, Applied):
            expected_version = 1 if state is None else state.version + 1
            assert outcome.state.version == expected_version
            assert outcome.change.version == expected_version
            assert outcome.state.last_offset == offset
            check_invariants(state, event, outcome.state)
            state = outcome.state
        elif isinstance(outcome, Duplicate):
            assert outcome.state is state
        else:
            assert isinstance(outcome, Rejected)
            assert outcome.reason
    assert fold(with_offsets(events)) == state
