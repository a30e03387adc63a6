"""The run task keeps each run's journal: one entry per applied event, in offset order, and
one for an event a known run's rules rejected; none for unknown runs or duplicates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runstate.runs.journal import JOURNAL, read_journal
from runstate.runs.keyspace import prefix_end
from runstate.runs.state import RunState
from runstate.runs.summary import SummaryCodec
from runstate.runtime import run_task
from runstate.runtime.eviction import FinishedRunEviction
from runstate.runtime.run_task import LayoutTable, RunTask
from runstate.schemas.events import AgentEvent
from tests.factories import make_run
from tests.runtime.test_eviction import EvictionContext
from tests.runtime.test_run_task import CODEC, NAMES, Context, _decode, _records, _task


def test_each_applied_or_rejected_event_of_a_known_run_has_one_entry_in_order() -> None:
    events = make_run("run-a", with_approval=True, seed=1)
    orphan = make_run("run-orphan", seed=2)[1]  # a StepStarted of no run: no journal
    late = events[1].model_copy(update={"event_id": "late-step"})  # the run has ended
    records = _records([*events, orphan, late, events[2]])  # events[2] a duplicate
    ctx = Context()
    _task().process(records, ctx)
    ctx.commit()
    store = ctx.store.open(0)
    entries, more = read_journal(store, "run-a", limit=1000)
    assert more is None
    applied = [e for e in entries if e.outcome == "applied"]
    assert [e.event_type for e in applied] == [e.event_type for e in events]
    assert [e.offset for e in applied] == list(range(len(events)))
    rejected = [e for e in entries if e.outcome == "rejected"]
    assert [(e.offset, e.event_type) for e in rejected] == [(len(events) + 1, "StepStarted")]
    assert rejected[0].detail.startswith("run_ended")
    granted = next(e for e in events if e.event_type == "ApprovalGranted")
    decision = next(e for e in entries if e.event_type == "ApprovalGranted")
    assert decision.actor == granted.by  # type: ignore[attr-defined]
    assert list(store.items(JOURNAL, prefix_end(JOURNAL))) and read_journal(
        store, "run-orphan"
    ) == ([], None)


def test_journal_off_writes_no_entry() -> None:
    task = RunTask(
        table=LayoutTable(),
        codec=CODEC,
        summaries=SummaryCodec(),
        decode=_decode,
        names=NAMES,
        worker_id="w1",
        max_event_bytes=64 * 1024,
        journal=False,
    )
    ctx = Context()
    task.process(_records(make_run("run-a")), ctx)
    ctx.commit()
    assert list(ctx.store.open(0).items(JOURNAL, prefix_end(JOURNAL))) == []


def test_eviction_removes_a_long_journal_within_its_budget_over_several_ticks() -> None:
    events = make_run("run-long", steps=[f"s{i}" for i in range(10)], seed=3)
    ctx = EvictionContext()
    _task().process(_records(events), ctx)
    ctx.commit()
    store = ctx.store.open(0)
    assert len(read_journal(store, "run-long", limit=1000)[0]) == len(events)
    eviction = FinishedRunEviction(
        names=NAMES, hot_for_s=60, forget=lambda ids: None, journal_budget=7
    )
    later = max(e.occurred_at for e in events) + timedelta(hours=1)
    ticks = 0
    while eviction.evict_due(ctx, owned={0}, now=later) == 0:
        assert len(ctx.transaction(0).writes()) <= 7  # one tick's tombstones stay bounded
        ctx.commit()
        ticks += 1
        assert ticks < len(events)
    ctx.commit()
    assert ticks == len(events) // 7
    assert list(store.items(b"", b"\xff")) == []  # head, entries, indexes and journal gone


def test_an_event_of_a_known_run_that_failed_processing_is_journaled_as_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = make_run("run-bug", seed=6)
    ctx, task = Context(), _task()
    task.process(_records(events[:1]), ctx)
    ctx.commit()

    def broken(state: RunState | None, event: AgentEvent, *, offset: int | None = None) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(run_task, "apply", broken)
    task.process(_records(events[1:2], first=1), ctx)
    ctx.commit()
    entries, _ = read_journal(ctx.store.open(0), "run-bug")
    assert [(e.offset, e.outcome, e.detail) for e in entries] == [
        (0, "applied", "agent purchase-approver from crm"),
        (1, "error", "ZeroDivisionError"),
    ]
