"""The writer's local fold over the real reducer in process: what it reads, and what it finds
out when the processor refused events it folded (a fence, an operator's cancel).

:class:`LaggingReader` is the processor seen from the SDK: a read at a position answers once
that position is applied (read-your-writes), a read without one answers from a state that
may lag behind, as a worker that has not applied the newest events yet does.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from runstate.agents import DurableRun, InMemoryRuns, ManualClock, RetryPolicy, StepContext
from runstate.agents.fold import LocalFold
from runstate.errors import RunFenced, StepAttemptFailed, StepError
from runstate.runs.reducer import RejectCode
from runstate.runs.state import RECENT_EVENT_IDS_LIMIT, RunState, RunStatus
from runstate.schemas.events import RunCancelled


class LaggingReader:
    """Reads of ``runs`` counted; reads without a position answer the state frozen by
    :meth:`freeze` (a worker behind the log) instead of the newest."""

    def __init__(self, runs: InMemoryRuns) -> None:
        self.runs = runs
        self.reads = 0
        self.frozen: dict[str, RunState | None] = {}

    def freeze(self, run_id: str) -> None:
        self.frozen[run_id] = self.runs.read(run_id)

    def read(self, run_id: str, *, after: Any = None) -> RunState | None:
        self.reads += 1
        if after is None and run_id in self.frozen:
            return self.frozen[run_id]
        return self.runs.read(run_id)

    def latest_position(self, run_id: str) -> Any:
        return self.runs.latest_position(run_id)


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def reader(runs: InMemoryRuns) -> LaggingReader:
    return LaggingReader(runs)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def start(runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock, holder: str) -> DurableRun:
    return DurableRun.start(
        runs, reader, run_id="run-1", agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test", clock=clock, holder=holder, lease=timedelta(seconds=30),
    )  # fmt: skip


def test_steps_decide_from_the_fold_and_read_nothing(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    run = start(runs, reader, clock, "proc-a")
    reads = reader.reads
    for i in range(10):
        assert run.step(f"s{i}", lambda ctx, i=i: str(i)) == str(i)
    assert run.step("s3", lambda ctx: "again") == "3"  # replayed from the fold
    assert reader.reads == reads
    assert run.folded == runs.read("run-1")


def test_the_fold_equals_the_processors_state_through_retries_and_actions(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    run = start(runs, reader, clock, "proc-a")
    tries: list[int] = []

    def flaky(ctx: StepContext) -> str:
        tries.append(ctx.attempt)
        if ctx.attempt < 3:
            raise StepAttemptFailed("timeout", "no answer in 30 s")
        return "ok"

    def act(ctx: StepContext) -> str:
        return ctx.call_once("k", lambda: "ext-1", system="email").external_id

    assert run.step("flaky", flaky, retry=RetryPolicy(max_attempts=3, base_s=1.0)) == "ok"
    assert run.folded == runs.read("run-1")
    assert run.step("act", act) == "ext-1"
    run.record_model_call("req-1", "m")
    assert run.folded == runs.read("run-1")
    assert tries == [1, 2, 3] and clock.slept == [1.0, 2.0]
    run.complete("done")
    assert run.folded == runs.read("run-1")
    assert run.folded is not None and run.folded.status is RunStatus.COMPLETED


def test_a_fenced_process_learns_it_at_its_next_outside_read(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    first = start(runs, reader, clock, "proc-a")
    first.step("one", lambda ctx: "1")
    reader.freeze("run-1")  # the worker has not applied the claim yet when proc-a looks
    second = DurableRun.attach(runs, runs, "run-1", clock=clock, holder="proc-b")
    assert second.epoch == 2
    # Its own steps need no read: it folds them and goes on, the processor refuses them.
    assert first.step("two", lambda ctx: "2") == "2"
    assert first.step("three", lambda ctx: "3") == "3"
    assert {(r.event.event_type, r.rejection.code) for r in runs.rejected} == {
        ("StepStarted", RejectCode.FENCED),
        ("StepCompleted", RejectCode.FENCED),
    }
    sent: list[str] = []
    with pytest.raises(RunFenced, match=r"claimed by proc-b \(epoch 2\)"):
        first.step(
            "four",
            lambda ctx: ctx.call_once("k", lambda: sent.append("x") or "e", system="s").external_id,
        )
    assert sent == []  # the read before the call stopped it
    s = runs.read("run-1")
    assert s is not None and [c.step for c in s.completed_steps] == ["one"]


def test_a_fenced_process_learns_it_when_it_ends_the_run(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    first = start(runs, reader, clock, "proc-a")
    reader.freeze("run-1")
    DurableRun.attach(runs, runs, "run-1", clock=clock, holder="proc-b")
    first.step("one", lambda ctx: "1")
    with pytest.raises(RunFenced):
        first.complete("1")
    s = runs.read("run-1")
    assert s is not None and (s.status, s.holder) == (RunStatus.CREATED, "proc-b")


def test_a_run_cancelled_from_outside_is_found_at_the_next_outside_read(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    run = start(runs, reader, clock, "proc-a")
    run.step("one", lambda ctx: "1")
    reader.freeze("run-1")
    runs.emit(runs.new_event(RunCancelled, "run-1", by="ops", reason="customer withdrew"))
    assert run.step("two", lambda ctx: "2") == "2"  # folded, refused by the processor
    with pytest.raises(StepError, match=r"changed from outside.*StepStarted was not applied"):
        run.complete()
    s = runs.read("run-1")
    assert s is not None and s.status is RunStatus.CANCELLED


def test_a_look_that_sees_the_fence_stops_the_next_step_before_its_body(
    runs: InMemoryRuns, reader: LaggingReader, clock: ManualClock
) -> None:
    first = start(runs, reader, clock, "proc-a")
    DurableRun.attach(runs, runs, "run-1", clock=clock, holder="proc-b")
    ran: list[str] = []
    with pytest.raises(RunFenced):
        first.step("one", lambda ctx: ran.append("one") or "1")
    assert ran == []


def test_the_check_covers_only_the_digest_window(runs: InMemoryRuns) -> None:
    """With more applied events since the base than a state remembers, only the last own
    event can be checked: an older one missing is not taken for a refusal."""
    run = DurableRun.start(
        runs, runs, run_id="run-1", agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test",
    )  # fmt: skip
    base = runs.read("run-1")
    assert base is not None
    fold = LocalFold("run-1")
    fold.rebase(base)
    for i in range(RECENT_EVENT_IDS_LIMIT + 5):
        run.record_model_call(f"r{i}", "m")
        event = runs.events_of("run-1")[-1]
        delivery = runs.latest_position("run-1")
        assert delivery is not None
        fold.own(event, delivery)
    assert fold.unverified == RECENT_EVENT_IDS_LIMIT
    fold.rebase(run.state())  # every one applied: no error, nothing left to check
    assert fold.unverified == 0
