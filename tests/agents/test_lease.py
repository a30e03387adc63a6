"""The run lease from the SDK's side, over the real reducer in process (InMemoryRuns).

Two "processes" here are two DurableRun objects with their own holder names over the same
log: what matters to the lease is who claimed which epoch, not the operating system.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from runstate.agents import DurableRun, InMemoryRuns, ManualClock, StepContext
from runstate.agents.client import Position
from runstate.agents.lease import check_claim
from runstate.agents.process import EXIT_FENCED, drive_once
from runstate.errors import RunFenced, RunLeased, StepError
from runstate.runs.reducer import RejectCode
from runstate.runs.state import RunState, RunStatus
from runstate.schemas.events import RunClaimed, RunStarted, StepCompleted


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def start(runs: InMemoryRuns, clock: ManualClock, holder: str = "proc-a") -> DurableRun:
    return DurableRun.start(
        runs,
        runs,
        run_id="run-1",
        agent="credit-limit",
        input="{}",
        prompt_version="p",
        owner="o",
        source="test",
        clock=clock,
        holder=holder,
        lease=timedelta(seconds=30),
    )


def attach(runs: InMemoryRuns, clock: ManualClock, holder: str, **kw: object) -> DurableRun:
    return DurableRun.attach(runs, runs, "run-1", clock=clock, holder=holder, **kw)


def test_starting_claims_the_run_and_every_event_carries_the_epoch(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    run = start(runs, clock)
    run.step("one", lambda ctx: "1")
    s = run.state()
    assert (s.epoch, s.holder, s.lease_ms) == (1, "proc-a", 30_000)
    events = runs.events_of("run-1")
    assert [type(e) for e in events[:2]] == [RunStarted, RunClaimed]
    assert [e.epoch for e in events[1:]] == [1, 1, 1]
    assert events[0].epoch is None  # nothing to fence before the first claim


def test_the_second_claim_fences_the_first_at_its_next_step(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    first = start(runs, clock)
    first.step("one", lambda ctx: "1")
    second = attach(runs, clock, "proc-b")
    assert (second.epoch, second.state().holder) == (2, "proc-b")
    ran: list[str] = []
    with pytest.raises(RunFenced, match=r"claimed by proc-b \(epoch 2\)") as caught:
        first.step("two", lambda ctx: ran.append("first") or "2")
    assert (caught.value.holder, caught.value.epoch) == ("proc-b", 2)
    # It decides from its local fold, so it learned from its StepStarted's place in the log
    # (another record landed since its previous event), before running the body.
    assert ran == []
    assert [(r.event.event_type, r.rejection.code) for r in runs.rejected] == [
        ("StepStarted", RejectCode.FENCED)
    ]
    assert second.step("two", lambda ctx: "2") == "2"


def test_a_step_finished_after_the_takeover_is_fenced_and_redone_by_the_new_holder(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    first = start(runs, clock)
    second: list[DurableRun] = []

    def slow(ctx: StepContext) -> str:
        # The queue redelivers the task while this worker is only slow.
        second.append(attach(runs, clock, "proc-b"))
        return "late"

    first.step("one", slow)
    [late] = runs.rejected
    assert isinstance(late.event, StepCompleted) and late.event.epoch == 1
    assert late.rejection.code is RejectCode.FENCED
    assert late.rejection.reason.startswith("fenced: run claimed by proc-b (epoch 2)")
    with pytest.raises(RunFenced):
        first.step("two", lambda ctx: "2")
    # The new holder finds the attempt interrupted and runs it again.
    assert second[0].step("one", lambda ctx: "again") == "again"
    s = second[0].state()
    assert [c.attempt for c in s.completed_steps] == [2]


def test_takeover_false_waits_for_the_lease_to_run_out(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    first = start(runs, clock)
    first.step("one", lambda ctx: "1")
    clock.advance(29)
    with pytest.raises(RunLeased, match="driven by proc-a") as caught:
        attach(runs, clock, "proc-b", takeover=False)
    assert caught.value.until == first.state().lease_until
    clock.advance(2)  # past the lease: the holder is presumed dead
    second = attach(runs, clock, "proc-b", takeover=False)
    assert second.step("two", lambda ctx: "2") == "2"
    assert second.state().completed_steps[-1].step == "two"


def test_the_holders_own_events_renew_its_lease(runs: InMemoryRuns, clock: ManualClock) -> None:
    first = start(runs, clock)
    clock.advance(25)
    first.step("one", lambda ctx: "1")
    clock.advance(25)  # 50 s after the claim, 25 s after the last event
    with pytest.raises(RunLeased):
        attach(runs, clock, "proc-b", takeover=False)


def test_the_same_holder_reattaching_needs_no_takeover(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    start(runs, clock, holder="proc-a")
    again = attach(runs, clock, "proc-a", takeover=False)
    assert again.epoch == 2


def test_an_ended_run_is_not_claimed(runs: InMemoryRuns, clock: ManualClock) -> None:
    run = start(runs, clock)
    run.step("one", lambda ctx: "1")
    run.complete()
    count = len(runs.events)
    later = attach(runs, clock, "proc-b")
    assert later.epoch is None
    assert later.step("one", lambda ctx: "never") == "1"
    assert len(runs.events) == count


def test_a_run_from_before_the_lease_is_claimed_at_epoch_1(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    legacy = runs.new_event(
        RunStarted,
        "run-1",
        agent="a",
        input="{}",
        prompt_version="p",
        owner="o",
        source="old-sdk",
    )
    runs.emit(legacy)
    run = attach(runs, clock, "proc-a")
    assert (run.epoch, run.state().epoch) == (1, 1)


def test_a_lost_race_to_claim_is_fenced(runs: InMemoryRuns, clock: ManualClock) -> None:
    run = start(runs, clock)
    s = run.state()
    with pytest.raises(RunFenced, match="proc-a"):
        check_claim(s, "proc-b", 1)
    with pytest.raises(StepError, match="was not applied"):
        check_claim(s, "proc-b", 2)


def test_a_fenced_pass_exits_as_fenced(runs: InMemoryRuns, clock: ManualClock) -> None:
    first = start(runs, clock)
    attach(runs, clock, "proc-b")
    outcome = drive_once(lambda: first.step("one", lambda ctx: "1") or "")
    assert (outcome.status, outcome.code) == ("fenced", EXIT_FENCED)
    assert "proc-b" in outcome.detail


def test_the_lease_must_be_positive(runs: InMemoryRuns, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="at least 1 ms"):
        DurableRun("run-1", sink=runs, reader=runs, position=None, lease=timedelta(0))


def test_the_state_shows_who_drives_the_run(runs: InMemoryRuns, clock: ManualClock) -> None:
    run = start(runs, clock)
    s = run.state()
    assert s.status is RunStatus.CREATED
    assert s.lease_held_at(clock.now())
    assert not s.lease_held_at(clock.now() + timedelta(seconds=30))


class LaggingReads:
    """InMemoryRuns whose reads that do not wait answer an older state (what the processor
    had committed when ``freeze`` was called), as a worker between two commits does; reads
    at a position answer the state with every event applied, as read-your-writes does."""

    def __init__(self, runs: InMemoryRuns) -> None:
        self.runs = runs
        self.frozen: dict[str, RunState | None] = {}
        self.reads_without_wait = 0

    def freeze(self, run_id: str) -> None:
        self.frozen[run_id] = self.runs.read(run_id)

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None:
        if after is None:
            self.reads_without_wait += 1
            if run_id in self.frozen:
                return self.frozen[run_id]
        return self.runs.read(run_id, after=after)

    def latest_position(self, run_id: str) -> Position | None:
        return self.runs.latest_position(run_id)


def test_attach_claims_from_the_committed_state_and_sees_what_came_before_its_claim(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    first = start(runs, clock)
    lagging = LaggingReads(runs)
    lagging.freeze("run-1")
    first.step("one", lambda ctx: "1")  # written after what the processor had committed
    later = DurableRun.attach(runs, lagging, "run-1", clock=clock, holder="proc-b")
    assert lagging.reads_without_wait == 1
    assert later.epoch == 2
    assert later.folded is not None and [c.step for c in later.folded.completed_steps] == ["one"]
    assert later.step("one", lambda ctx: "never") == "1"
    assert runs.rejected == []


def test_a_claim_the_committed_state_lacked_makes_attach_claim_again(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    start(runs, clock)
    lagging = LaggingReads(runs)
    lagging.freeze("run-1")
    second = attach(runs, clock, "proc-b")  # epoch 2, not committed yet
    third = DurableRun.attach(runs, lagging, "run-1", clock=clock, holder="proc-c")
    # Its claim of epoch 2 (from the committed epoch 1) lost to proc-b's; it claimed 3.
    assert third.epoch == 3 and third.state().holder == "proc-c"
    assert [(r.event.event_type, r.rejection.code) for r in runs.rejected] == [
        ("RunClaimed", RejectCode.FENCED)
    ]
    with pytest.raises(RunFenced, match="proc-c"):
        second.state()


def test_takeover_false_reads_the_whole_partition_before_deciding(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    lagging = LaggingReads(runs)
    lagging.freeze("run-1")  # nothing committed yet
    start(runs, clock)
    with pytest.raises(RunLeased):
        DurableRun.attach(runs, lagging, "run-1", clock=clock, holder="proc-b", takeover=False)
    assert lagging.reads_without_wait == 0
