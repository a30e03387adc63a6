"""The benchmark workload generator: reproducible, in range, and valid for the reducer."""

from __future__ import annotations

from collections import Counter

import pytest
from benchmarks.workload import MAX_EVENTS, MAX_SIZE, MIN_EVENTS, MIN_SIZE, Workload, generate

from runstate.runs.reducer import Applied, apply
from runstate.schemas.convert import decode_event, encode_event


@pytest.fixture(scope="module")
def workload() -> Workload:
    return generate(150, seed=11)


def test_same_seed_gives_the_same_bytes() -> None:
    assert generate(20, seed=3).encoded == generate(20, seed=3).encoded
    assert generate(20, seed=3).encoded != generate(20, seed=4).encoded


def test_runs_and_events_are_in_range(workload: Workload) -> None:
    assert len(workload.runs) == 150
    assert all(MIN_EVENTS <= len(run) <= MAX_EVENTS for run in workload.runs)
    assert all(MIN_SIZE <= size <= MAX_SIZE for size in workload.sizes())
    assert len(set(workload.run_ids)) == 150


def test_encoded_bytes_are_the_events(workload: Workload) -> None:
    for event, data in zip(workload.events[:200], workload.encoded[:200], strict=True):
        assert encode_event(event) == data
        assert decode_event(data) == event


def test_interleaving_keeps_each_runs_order(workload: Workload) -> None:
    seen: dict[str, list[str]] = {}
    for event in workload.events:
        seen.setdefault(event.run_id, []).append(event.event_id)
    for run in workload.runs:
        assert seen[run[0].run_id] == [e.event_id for e in run]
    # interleaved: consecutive events mostly belong to different runs
    switches = sum(
        a.run_id != b.run_id for a, b in zip(workload.events, workload.events[1:], strict=False)
    )
    assert switches > len(workload.events) * 0.8


def test_every_event_is_applied_by_the_reducer(workload: Workload) -> None:
    for run in workload.runs:
        state = None
        for offset, event in enumerate(run):
            outcome = apply(state, event, offset=offset)
            assert isinstance(outcome, Applied), (event, outcome)
            state = outcome.state


def test_the_shapes_the_benchmarks_promise_occur(workload: Workload) -> None:
    types = workload.type_counts()
    for name in (
        "StepFailed",
        "RetryScheduled",
        "ExternalActionIntended",
        "ExternalActionRecorded",
        "ApprovalGranted",
        "ApprovalRejected",
        "ApprovalExpired",
        "RunCancelled",
        "RunFailed",
        "RunCompleted",
    ):
        assert types[name] > 0, name
    endings = Counter(run[-1].event_type for run in workload.runs)
    assert endings["RunCompleted"] > len(workload.runs) // 2
