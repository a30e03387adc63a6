"""Replay audit against the latest-state topic: summaries compared with summaries."""

from __future__ import annotations

import dataclasses

from runstate.retention import compare_states
from runstate.runs.reducer import fold
from runstate.runs.summary import summarize
from runstate.schemas.events import AgentEvent
from tests.factories import make_run


def _pairs(run_id: str, seed: int) -> list[tuple[int, AgentEvent]]:
    return list(enumerate(make_run(run_id, seed=seed, model_calls=3)))


def test_a_summary_equal_to_the_replays_is_no_mismatch_and_a_wrong_count_is_one() -> None:
    state = fold(_pairs("run-a", 1))
    assert state is not None
    live = summarize(state)
    assert compare_states({"run-a": state}, {"run-a": live}) == []

    behind = dataclasses.replace(live, model_call_count=live.model_call_count - 1)
    [mismatch] = compare_states({"run-a": state}, {"run-a": behind})
    assert (mismatch.kind, mismatch.path) == ("field", "model_call_count")
    assert (mismatch.replayed, mismatch.live) == (live.model_call_count, behind.model_call_count)


def test_missing_runs_on_either_side_are_mismatches() -> None:
    a, b = fold(_pairs("run-a", 1)), fold(_pairs("run-b", 2))
    assert a is not None and b is not None
    mismatches = compare_states({"run-a": a}, {"run-b": summarize(b)})
    assert sorted((m.run_id, m.kind) for m in mismatches) == [
        ("run-a", "missing_live"),
        ("run-b", "missing_replay"),
    ]


def test_a_live_summary_ahead_of_the_replay_is_skipped() -> None:
    pairs = _pairs("run-a", 1)
    replayed, live = fold(pairs[:-2]), fold(pairs)
    assert replayed is not None and live is not None and live.last_offset is not None
    summary = summarize(live)
    assert compare_states({"run-a": replayed}, {"run-a": summary})  # differs...
    ends = {0: live.last_offset}  # ...but the live side saw events past the replay's end
    assert compare_states({"run-a": replayed}, {"run-a": summary}, ends=ends) == []
