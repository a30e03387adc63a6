"""List queries and due approvals answered from the indexes, equal to brute force."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstate.errors import QueryError
from runstate.runs.deadlines import pending_deadline
from runstate.runs.keyspace import ENTRY, HEAD, decode_text_part
from runstate.runs.layout import LayoutCodec, run_writes
from runstate.runs.reducer import is_overdue
from runstate.runs.run_index import (
    FILTER_INDEXES,
    due_approvals,
    finished_before,
    list_order,
    list_runs,
    pending_approvals,
    runs_needing_attention,
)
from runstate.runs.run_view import RunFilter
from runstate.runs.state import (
    ActionState,
    Approval,
    ApprovalOutcome,
    ExternalAction,
    ModelCall,
    RunState,
    RunStatus,
    StepPhase,
)
from runstate.schemas.events import ApproverKind
from tests.factories import T0
from tests.runs.conftest import RunStateFactory
from tests.runs.sorted_store import CountingReader, SortedStore

# Small pools so that filters select some runs and not others; separators included.
_OWNERS = ["ann", "bob", "ann\x00bob", "ann\x00"]
_STEPS = ["collect", "check", "check\x00\x01x"]
_APPROVERS = ["managers", "ops", "ops\x00"]
#: Times near T0, so overdue and idle_for split the runs.
_TIMES = st.integers(-600, 600).map(lambda s: T0 + timedelta(seconds=s))


_RUN_IDS = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\xff", "r", "1", "é"]), min_size=1)
_approvals = st.builds(
    Approval,
    step=st.just("check"),
    approver=st.sampled_from(_APPROVERS),
    approver_kind=st.just(ApproverKind.GROUP),
    subject_hash=st.sampled_from(["sha256:abc", "sha256:def"]),
    subject=st.just("Buy 3 laptops"),
    requested_at=st.just(T0),
    due_at=_TIMES,
    outcome=st.sampled_from(ApprovalOutcome),
)


@st.composite
def _pooled_states(draw: st.DrawFn) -> RunState:
    """Runs whose filtered fields come from small pools (light: many runs per example)."""
    return RunState(
        run_id=draw(_RUN_IDS),
        status=draw(st.sampled_from(RunStatus)),
        agent="purchase-approver",
        owner=draw(st.sampled_from(_OWNERS)),
        input="{}",
        prompt_version="p-7",
        source="crm",
        created_at=T0,
        updated_at=draw(_TIMES),
        version=draw(st.integers(1, 99)),
        current_step=draw(st.none() | st.sampled_from(_STEPS)),
        step_phase=draw(st.none() | st.sampled_from(StepPhase)),
        approval=draw(st.none() | _approvals),
        needs_attention=draw(st.booleans()),
        external_actions=tuple(
            ExternalAction(
                idempotency_key=f"key-{i}",
                system="erp",
                step="act",
                state=draw(st.sampled_from(ActionState)),
                intended_at=T0,
            )
            for i in range(draw(st.integers(0, 2)))
        ),
        model_calls=tuple(
            ModelCall(request_id=f"req-{i}", model="m") for i in range(draw(st.integers(0, 2)))
        ),
    )


_run_sets = st.lists(_pooled_states(), min_size=8, max_size=30, unique_by=lambda s: s.run_id)


def _often_none(values: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly no criterion: filters of one or two criteria select enough runs to page."""
    return st.tuples(st.integers(0, 9), st.sampled_from(values)).map(
        lambda pair: pair[1] if pair[0] >= 8 else None
    )


_filters = st.builds(
    RunFilter,
    status=_often_none(list(RunStatus)),
    owner=_often_none(_OWNERS),
    approver=_often_none(_APPROVERS),
    overdue=_often_none([True]).map(bool),
    step=_often_none(_STEPS),
    phase=_often_none(list(StepPhase)),
    idle_for=_often_none([timedelta(seconds=s) for s in (1, 60, 300, 900)]),
    needs_attention=_often_none([True]).map(bool),
    unknown_actions=_often_none([True]).map(bool),
)


def _stored(runs: list[RunState]) -> SortedStore:
    store = SortedStore()
    for state in runs:
        store.apply(run_writes(None, state))
    return store


def _ordered(f: RunFilter, runs: list[RunState]) -> list[RunState]:
    """Brute force in the documented order."""
    order = list_order(f)
    key: Any
    if order == "due_at":
        key = lambda s: (s.approval.due_at, s.run_id.encode())  # noqa: E731
    elif order == "updated_at":
        key = lambda s: (s.updated_at, s.run_id.encode())  # noqa: E731
    else:
        key = lambda s: s.run_id.encode()  # noqa: E731
    return sorted(runs, key=key)


def _all_pages(store: SortedStore, f: RunFilter, now: datetime, limit: int) -> list[RunState]:
    out: list[RunState] = []
    cursor: str | None = None
    while True:
        page, cursor = list_runs(store, f, now=now, after=cursor, limit=limit)
        assert len(page) <= limit
        out.extend(page)
        if cursor is None:
            return out
        assert len(page) == limit


@settings(max_examples=300)
@given(_run_sets, _filters, _TIMES, st.integers(1, 6))
def test_listing_equals_brute_force_in_order_across_pages(
    runs: list[RunState], f: RunFilter, now: datetime, limit: int
) -> None:
    store = _stored(runs)
    expected = _ordered(f, [s for s in runs if f.matches(s, now)])
    assert _all_pages(store, f, now, limit) == expected


class _CountingCodec(LayoutCodec):
    """Remembers which runs it decoded heads of."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[str] = []

    def decode_head(self, data: bytes) -> RunState:
        state = super().decode_head(data)
        self.heads.append(state.run_id)
        return state


@given(_run_sets, _filters, _TIMES)
def test_listing_decodes_no_run_it_does_not_return(
    runs: list[RunState], f: RunFilter, now: datetime
) -> None:
    reader = CountingReader(_stored(runs))
    codec = _CountingCodec()
    page, _ = list_runs(reader, f, now=now, limit=2, codec=codec)
    returned = [s.run_id for s in page]
    assert codec.heads == returned
    if f != RunFilter():
        # Only the empty filter walks the heads; every other one reads only index keys.
        touched = {
            decode_text_part(key, 2)[0] for key in reader.read if key.startswith((HEAD, ENTRY))
        }
        assert touched <= set(returned)


@given(_run_sets, _TIMES)
def test_due_approvals_come_from_the_index_alone(runs: list[RunState], now: datetime) -> None:
    reader = CountingReader(_stored(runs))
    due = list(due_approvals(reader, now, partition=3))
    expected = [pending_deadline(3, s) for s in runs if is_overdue(s, now)]
    assert sorted(due, key=lambda d: (d.due_at, d.run_id.encode())) == due
    assert set(due) == set(expected)
    assert not [key for key in reader.read if key.startswith((HEAD, ENTRY))]
    pending = {pending_deadline(3, s) for s in runs} - {None}
    assert set(pending_approvals(reader, partition=3)) == pending


def test_a_cursor_of_another_listing_is_refused(run_state_factory: RunStateFactory) -> None:
    store = _stored([run_state_factory(run_id=f"run-{i}") for i in range(3)])
    _, cursor = list_runs(store, RunFilter(owner="team-procurement"), now=T0, limit=1)
    assert cursor is not None
    with pytest.raises(QueryError, match="list again without a cursor"):
        list_runs(store, RunFilter(status=RunStatus.CREATED), now=T0, after=cursor)
    with pytest.raises(QueryError):
        list_runs(store, RunFilter(), now=T0, after="not base64!")
    with pytest.raises(ValueError, match="limit"):
        list_runs(store, RunFilter(), now=T0, limit=0)


def test_the_last_full_page_has_no_cursor(run_state_factory: RunStateFactory) -> None:
    store = _stored([run_state_factory(run_id=f"run-{i}") for i in range(4)])
    first, cursor = list_runs(store, RunFilter(), now=T0, limit=2)
    second, last = list_runs(store, RunFilter(), now=T0, after=cursor, limit=2)
    assert [s.run_id for s in first + second] == ["run-0", "run-1", "run-2", "run-3"]
    assert last is None


@given(_run_sets, st.integers(1, 4))
def test_runs_needing_attention_page_by_run_id(runs: list[RunState], limit: int) -> None:
    store = _stored(runs)
    out: list[RunState] = []
    cursor: str | None = None
    while True:
        page, cursor = runs_needing_attention(store, after=cursor, limit=limit)
        out.extend(page)
        if cursor is None:
            break
    expected = sorted((s for s in runs if s.needs_person), key=lambda s: s.run_id.encode())
    assert out == expected


def test_every_filter_criterion_has_an_index() -> None:
    assert set(FILTER_INDEXES) == {f.name for f in dataclasses.fields(RunFilter)}


@given(runs=_run_sets, at=_TIMES, limit=st.integers(1, 40))
@settings(max_examples=60)
def test_finished_before_lists_finished_runs_idle_since_before_oldest_first(
    runs: list[RunState], at: datetime, limit: int
) -> None:
    store = _stored(runs)
    expected = sorted(
        ((s.updated_at, s.run_id) for s in runs if s.is_terminal and s.updated_at < at),
    )
    got = finished_before(store, at, limit=limit)
    assert got == [run_id for _, run_id in expected][:limit]
