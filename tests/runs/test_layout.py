"""A run stored as head + entries + index keys: written event by event, read back exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import DecodeError
from runstate.runs.keyspace import (
    ENTRY,
    HEAD,
    INDEX,
    decode_text_part,
    entry_key,
    head_key,
    index_entries,
)
from runstate.runs.layout import LayoutCodec, load_run, run_deletes, run_writes
from runstate.runs.reducer import Applied, apply, fold
from runstate.runs.run_index import rebuild_indexes
from runstate.runs.state import CompletedStep, ModelCall, RunState
from runstate.schemas.catalog import default_catalog
from runstate.schemas.events import AgentEvent
from tests.factories import T0, plausible_runs
from tests.runs.conftest import RunStateFactory
from tests.runs.sorted_store import SortedStore
from tests.runs.test_state_codec import states

_SEPARATORS = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\xff", "r", "é"]), min_size=1)


def _store_events(store: SortedStore, events: list[AgentEvent]) -> RunState | None:
    """Apply ``events`` as the processor would: one ``run_writes`` batch per applied event."""
    state: RunState | None = None
    for event in events:
        outcome = apply(state, event)
        if isinstance(outcome, Applied):
            store.apply(run_writes(state, outcome.state))
            state = outcome.state
    return state


def _assert_stored_exactly(store: SortedStore, state: RunState) -> None:
    assert load_run(store, state.run_id) == state
    assert store.under(INDEX) == index_entries(state)
    assert rebuild_indexes(store) == []


@given(plausible_runs())
def test_a_run_written_event_by_event_loads_as_its_fold(events: list[AgentEvent]) -> None:
    store = SortedStore()
    state = _store_events(store, events)
    assert state == fold(events)
    if state is None:
        assert len(store) == 0
        return
    _assert_stored_exactly(store, state)


@given(st.lists(_SEPARATORS, min_size=2, max_size=3, unique=True), st.data())
def test_interleaved_runs_share_the_key_space_exactly(
    run_ids: list[str], data: st.DataObject
) -> None:
    """Runs whose ids run into each other's prefixes, their events interleaved."""
    runs = [data.draw(plausible_runs(run_id=run_id)) for run_id in run_ids]
    order = data.draw(st.permutations([i for i, events in enumerate(runs) for _ in events]))
    queues = [iter(events) for events in runs]
    store = SortedStore()
    states: dict[str, RunState] = {}
    for i in order:
        event = next(queues[i])
        outcome = apply(states.get(event.run_id), event)
        if isinstance(outcome, Applied):
            writes = run_writes(states.get(event.run_id), outcome.state)
            assert {decode_text_part(key, _run_at(key))[0] for key, _ in writes} == {event.run_id}
            store.apply(writes)
            states[event.run_id] = outcome.state
    expected: dict[bytes, bytes] = {}
    for run_id, events in zip(run_ids, runs, strict=True):
        assert load_run(store, run_id) == states.get(run_id) == fold(events)
    for state in states.values():
        expected.update(index_entries(state))
    assert store.under(INDEX) == expected
    assert rebuild_indexes(store) == []


def _run_at(key: bytes) -> int:
    """Where the run id starts in any key of the scheme."""
    if key.startswith((HEAD, ENTRY)):
        return 2
    name_end = key.index(b"\x00", len(INDEX))
    if key[len(INDEX) : name_end] in (b"due", b"updated", b"finished"):
        return name_end + 1 + 8
    if key[len(INDEX) : name_end] in (b"times", b"attention", b"unknown"):
        return name_end + 1
    return decode_text_part(key, name_end + 1)[1]


@given(st.lists(states, min_size=1, max_size=5), _SEPARATORS)
def test_any_sequence_of_states_leaves_no_stale_key(seq: list[RunState], run_id: str) -> None:
    """Arbitrary states change every indexed value and shrink collections too."""
    store = SortedStore()
    previous: RunState | None = None
    for state in seq:
        state = replace(state, run_id=run_id)
        store.apply(run_writes(previous, state))
        _assert_stored_exactly(store, state)
        previous = state
    assert previous is not None
    store.apply(run_deletes(previous))
    assert len(store) == 0


@given(st.lists(states, min_size=2, max_size=6, unique_by=lambda s: s.run_id))
def test_runs_whose_ids_hold_separators_stay_apart(runs: list[RunState]) -> None:
    store = SortedStore()
    for state in runs:
        store.apply(run_writes(None, state))
    for state in runs:
        assert load_run(store, state.run_id) == state
    assert rebuild_indexes(store) == []


def test_an_appended_item_writes_one_entry_and_shares_the_rest(
    run_state_factory: RunStateFactory,
) -> None:
    calls = tuple(ModelCall(request_id=f"r{i}", model="m") for i in range(50))
    old = run_state_factory(model_calls=calls)
    new = replace(old, version=2, model_calls=(*calls, ModelCall(request_id="r50", model="m")))
    keys = [key for key, _ in run_writes(old, new)]
    assert keys == [head_key("run-1"), entry_key("run-1", b"m", 50)]
    assert run_writes(new, new) == []


def test_an_unknown_run_loads_as_none() -> None:
    assert load_run(SortedStore(), "nope") is None


def test_a_gap_in_the_entries_is_reported(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(model_calls=(ModelCall(request_id="a", model="m"),) * 2)
    store = SortedStore()
    store.apply(run_writes(None, state))
    store.apply([(entry_key("run-1", b"m", 0), None)])
    with pytest.raises(DecodeError, match="restore the partition"):
        load_run(store, "run-1")


def test_writing_another_run_over_a_run_is_refused(run_state_factory: RunStateFactory) -> None:
    with pytest.raises(ValueError, match="cannot write run"):
        run_writes(run_state_factory(), run_state_factory(run_id="run-2"))


def test_rebuild_finds_stale_missing_and_wrong_index_entries(
    run_state_factory: RunStateFactory,
) -> None:
    store = SortedStore()
    state = run_state_factory(owner="ann")
    store.apply(run_writes(None, state))
    right = index_entries(state)
    times = next(k for k in right if k.startswith(INDEX + b"times"))
    owner = next(k for k in right if k.startswith(INDEX + b"owner"))
    stale = INDEX + b"owner\x00bob\x00\x01run-1\x00\x01"
    store.apply([(stale, b""), (owner, None), (times, b"\x00" * 16)])
    repairs = rebuild_indexes(store)
    assert sorted(repairs) == sorted([(stale, None), (owner, b""), (times, right[times])])
    store.apply(repairs)
    assert rebuild_indexes(store) == []


def test_entries_say_which_schema_wrote_them(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(
        model_calls=(ModelCall(request_id="a", model="m"),),
        completed_steps=(CompletedStep(step="s", step_index=0, attempt=1, completed_at=T0),),
    )
    catalog = default_catalog()
    written = dict(run_writes(None, state))
    step = written[entry_key("run-1", b"s", 0)]
    call = written[entry_key("run-1", b"m", 0)]
    assert step is not None and call is not None
    assert catalog.by_fingerprint(step[2:10]) == catalog.latest("CompletedStepEntry")
    assert catalog.by_fingerprint(call[2:10]) == catalog.latest("ModelCallEntry")
    head = written[head_key("run-1")]
    assert head is not None and LayoutCodec().decode_head(head) == replace(
        state, model_calls=(), completed_steps=()
    )
    assert all(k.startswith((HEAD, ENTRY, INDEX)) for k in written)
