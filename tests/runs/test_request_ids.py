"""Checking a model request id is new: O(1) on a long run, and exact whatever the order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstate.runs import state as state_module
from runstate.runs.reducer import Applied, Duplicate, apply, fold
from runstate.runs.state import ModelCall, append_model_call, model_calls_contain
from runstate.schemas.events import ModelCalled, StepStarted
from tests.factories import RunBuilder


@pytest.fixture
def small_sets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Sets from 2 calls on, at most 3 runs kept: every path is taken in a few steps."""
    monkeypatch.setattr(state_module._RequestIdSets, "threshold", 2)
    monkeypatch.setattr(state_module._RequestIdSets, "limit", 3)
    state_module._REQUEST_IDS.clear()
    yield
    state_module._REQUEST_IDS.clear()


def test_a_repeated_request_id_is_a_duplicate_at_a_runs_5000th_call() -> None:
    b = RunBuilder("run-calls")
    b.start()
    b.emit(StepStarted, step="draft", step_index=0, attempt=1)
    first = b.model_call("draft")
    for _ in range(4999):
        b.model_call("draft")
    state = fold(b.events)
    assert state is not None and len(state.model_calls) == 5000
    again = b.emit(
        ModelCalled, model_request_id=first.model_request_id, model="gpt-4o-mini", step="draft"
    )
    assert isinstance(apply(state, again), Duplicate)
    assert isinstance(apply(state, b.model_call("draft")), Applied)


def test_an_older_state_does_not_see_ids_appended_after_it() -> None:
    b = RunBuilder("run-branch")
    b.start()
    b.emit(StepStarted, step="draft", step_index=0, attempt=1)
    for _ in range(100):
        b.model_call("draft")
    older = fold(b.events)
    assert older is not None
    call = b.model_call("draft")
    newer = apply(older, call)
    assert isinstance(newer, Applied)
    assert newer.state.has_model_request(call.model_request_id)
    assert not older.has_model_request(call.model_request_id)
    # the same call applied to the older state again (a redo after an abort) is new there
    assert isinstance(apply(older, call.model_copy(update={"event_id": "e-redo"})), Applied)


_IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
_STEPS = st.lists(
    st.tuples(st.sampled_from(["append", "check"]), st.integers(0, 30), _IDS), max_size=40
)


@settings(max_examples=200)
@given(_STEPS)
def test_contain_answers_as_a_scan_would_in_any_order_of_appends_and_checks(
    steps: list[tuple[str, int, str]],
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state_module._RequestIdSets, "threshold", 2)
        mp.setattr(state_module._RequestIdSets, "limit", 3)
        state_module._REQUEST_IDS.clear()
        tuples: list[tuple[ModelCall, ...]] = [()]
        for op, which, request_id in steps:
            calls = tuples[which % len(tuples)]
            expected = any(c.request_id == request_id for c in calls)
            assert model_calls_contain(calls, request_id) == expected
            if op == "append" and not expected:
                tuples.append(append_model_call(calls, ModelCall(request_id=request_id, model="m")))
        for calls in tuples:
            for request_id in "abcdef":
                expected = any(c.request_id == request_id for c in calls)
                assert model_calls_contain(calls, request_id) == expected
        state_module._REQUEST_IDS.clear()


def test_runs_past_the_limit_are_forgotten_oldest_first(small_sets: None) -> None:
    runs = [(ModelCall(request_id=f"{r}-0", model="m"),) for r in range(5)]
    grown = [append_model_call(calls, ModelCall(request_id="x", model="m")) for calls in runs]
    for calls in grown:
        assert model_calls_contain(calls, "x")
    kept = state_module._REQUEST_IDS._sets
    assert len(kept) == 3
    assert [entry[0] for entry in kept.values()] == grown[2:]
