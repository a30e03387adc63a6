"""Approvals waiting and overdue counted from the due index alone (what ``/metrics`` shows)."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from runstate.runs.deadlines import pending_deadline
from runstate.runs.keyspace import ENTRY, HEAD
from runstate.runs.reducer import is_overdue
from runstate.runs.run_index import ApprovalCounts, count_approvals
from runstate.runs.state import RunState
from tests.runs.sorted_store import CountingReader
from tests.runs.test_run_index import _TIMES, _run_sets, _stored


@given(_run_sets, _TIMES)
def test_counts_equal_brute_force_and_read_no_run(runs: list[RunState], now: datetime) -> None:
    reader = CountingReader(_stored(runs))
    counts = count_approvals(reader, now, limit=1000)
    waiting = [s for s in runs if pending_deadline(0, s) is not None]
    overdue = [s for s in runs if is_overdue(s, now)]
    assert counts == ApprovalCounts(len(waiting), len(overdue))
    assert not [key for key in reader.read if key.startswith((HEAD, ENTRY))]
    assert len(reader.read) == len(waiting)


@given(_run_sets, _TIMES, st.integers(1, 3))
def test_a_count_stops_at_its_limit(runs: list[RunState], now: datetime, limit: int) -> None:
    reader = CountingReader(_stored(runs))
    counts = count_approvals(reader, now, limit=limit)
    waiting = sum(pending_deadline(0, s) is not None for s in runs)
    assert counts.capped == (waiting > limit)
    assert counts.waiting == min(waiting, limit)
    assert len(reader.read) <= limit + 1
