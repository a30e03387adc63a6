"""Calling agents back when a retry is due, in process: the real reducer, a manual clock.

The reactor is never run here (no broker): changes from :class:`InMemoryRuns` are handed to
``Reactor.dispatch`` and due retries fired with ``Reactor.call_due_retries``, which is what
``Reactor.run`` does between polls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from runstate.agents import (
    DurableRun,
    InMemoryRuns,
    ManualClock,
    Reactor,
    RetryDue,
    RetryPolicy,
    StepContext,
)
from runstate.agents.client import Position
from runstate.errors import RunSuspended
from runstate.runs.state import RunState, RunStatus, StepPhase
from runstate.schemas.events import RetryScheduled, RunCancelled, StepStarted

RUN = "run-1"
BACKOFF_S = 10.0


class Agent:
    """A two-step agent whose second step times out on its first attempt."""

    def __init__(self, runs: InMemoryRuns, clock: ManualClock) -> None:
        self.runs = runs
        self.clock = clock
        self.bodies: list[str] = []

    def check(self, ctx: StepContext) -> str:
        self.bodies.append("check")
        return "clean"

    def score(self, ctx: StepContext) -> str:
        self.bodies.append(f"score#{ctx.attempt}")
        if ctx.attempt == 1:
            raise TimeoutError("scoring did not answer")
        return "score:700"

    def drive(self, run: DurableRun) -> None:
        run.step("check", self.check)
        run.step("score", self.score, retry=RetryPolicy(max_attempts=3, base_s=BACKOFF_S))
        run.complete()

    def start(self) -> None:
        run = DurableRun.start(
            self.runs, self.runs, run_id=RUN, agent="t", input="{}", prompt_version="t@1",
            owner="tests", source="test", clock=self.clock, max_inline_wait_s=0.0,
        )  # fmt: skip
        with pytest.raises(RunSuspended):
            self.drive(run)

    def resume(self, run_id: str) -> None:
        run = DurableRun.attach(
            self.runs, self.runs, run_id, clock=self.clock, max_inline_wait_s=0.0
        )
        self.drive(run)


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def agent(runs: InMemoryRuns, clock: ManualClock) -> Agent:
    a = Agent(runs, clock)
    a.start()
    return a


ReactorFactory = Callable[..., Reactor]


@pytest.fixture
def new_reactor(runs: InMemoryRuns, clock: ManualClock) -> ReactorFactory:
    def make(reader: Any = None, **options: Any) -> Reactor:
        return Reactor(
            bootstrap_servers="unused:9092", topic="unused", group_id="retrier",
            runs=reader or runs, clock=clock, **options,
        )  # fmt: skip

    return make


def feed(reactor: Reactor, runs: InMemoryRuns, start: int = 0) -> int:
    """Dispatch the changes from index ``start``; the index to continue from."""
    for change in runs.changes[start:]:
        reactor.dispatch(change)
    return len(runs.changes)


def not_before(runs: InMemoryRuns) -> datetime:
    state = runs.read(RUN)
    assert state is not None and state.retry_not_before is not None
    return state.retry_not_before


def test_the_handler_is_not_called_before_not_before_and_once_after(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor()
    calls: list[tuple[RetryDue, datetime]] = []
    reactor.on_retry_due(lambda due: calls.append((due, clock.now())))
    feed(reactor, runs)
    when = not_before(runs)
    assert reactor.pending_retries[RUN].not_before == when

    clock.advance((when - clock.now()).total_seconds() - 0.001)
    assert reactor.call_due_retries() == 0 and calls == []
    clock.advance(0.001)
    assert reactor.call_due_retries() == 1
    clock.advance(60)
    assert reactor.call_due_retries() == 0
    [(due, at)] = calls
    assert at >= due.not_before == when
    assert (due.run_id, due.step, due.attempt) == (RUN, "score", 2)
    assert reactor.pending_retries == {}


def test_the_handler_resumes_at_the_failed_step_and_the_run_completes(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor()
    reactor.on_retry_due(lambda due: agent.resume(due.run_id))
    seen = feed(reactor, runs)
    clock.advance(BACKOFF_S)
    assert reactor.call_due_retries() == 1
    feed(reactor, runs, seen)  # the resumed run's own changes schedule nothing
    assert agent.bodies == ["check", "score#1", "score#2"]  # not started over
    state = runs.read(RUN)
    assert state is not None and state.status is RunStatus.COMPLETED
    assert reactor.pending_retries == {}
    resumed = [e for e in runs.events_of(RUN) if isinstance(e, StepStarted) and e.attempt == 2]
    [scheduled] = [e for e in runs.events_of(RUN) if isinstance(e, RetryScheduled)]
    assert resumed[0].occurred_at >= scheduled.not_before


def test_a_newer_change_cancels_the_pending_retry(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor()
    calls: list[RetryDue] = []
    reactor.on_retry_due(calls.append)
    seen = feed(reactor, runs)
    assert RUN in reactor.pending_retries
    runs.emit(runs.new_event(RunCancelled, RUN, by="ops", reason="customer withdrew"))
    feed(reactor, runs, seen)
    assert reactor.pending_retries == {}
    clock.advance(BACKOFF_S * 2)
    assert reactor.call_due_retries() == 0 and calls == []


def test_a_change_that_leaves_the_run_waiting_keeps_it_on_the_timetable(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor()
    calls: list[RetryDue] = []
    reactor.on_retry_due(calls.append)
    seen = feed(reactor, runs)
    DurableRun.attach(runs, runs, RUN, clock=clock).record_model_call("req-1", "gpt-x")
    feed(reactor, runs, seen)
    pending = reactor.pending_retries[RUN]
    state = runs.read(RUN)
    assert state is not None and pending.version == state.version
    clock.advance(BACKOFF_S)
    assert reactor.call_due_retries() == 1 and len(calls) == 1


def test_a_failing_handler_is_retried_per_policy(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor(handler_attempts=3)
    tries: list[int] = []

    @reactor.on_retry_due
    def flaky(due: RetryDue) -> None:
        tries.append(due.version)
        if len(tries) < 3:
            raise ConnectionError("agent host is restarting")

    feed(reactor, runs)
    clock.advance(BACKOFF_S)
    assert reactor.call_due_retries() == 1
    assert len(tries) == 3 and reactor.pending_retries == {}


def test_a_handler_that_keeps_failing_raises_and_leaves_the_run_due(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    reactor = new_reactor(handler_attempts=2)

    @reactor.on_retry_due
    def broken(due: RetryDue) -> None:
        raise ConnectionError("agent host is down")

    feed(reactor, runs)
    clock.advance(BACKOFF_S)
    with pytest.raises(ConnectionError):
        reactor.call_due_retries()
    assert RUN in reactor.pending_retries  # called again next time, not dropped


def test_a_restarted_reactor_rebuilds_the_timetable_from_the_reader(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    # A finished run is not loaded.
    done = DurableRun.start(
        runs, runs, run_id="run-done", agent="t", input="{}", prompt_version="t@1",
        owner="tests", source="test", clock=clock,
    )  # fmt: skip
    done.complete()

    restarted = new_reactor()  # saw none of the changes: they were committed before
    calls: list[RetryDue] = []
    restarted.on_retry_due(calls.append)
    assert restarted.load_waiting_retries() == 1
    assert list(restarted.pending_retries) == [RUN]
    feed(restarted, runs)  # redelivered older changes do not cancel the loaded entry
    assert RUN in restarted.pending_retries

    clock.advance((not_before(runs) - clock.now()).total_seconds() - 0.001)
    assert restarted.call_due_retries() == 0
    clock.advance(0.001)
    assert restarted.call_due_retries() == 1 and [c.run_id for c in calls] == [RUN]


class LaggingReader:
    """Answers plain reads from a snapshot taken earlier (a worker behind the change)."""

    def __init__(self, runs: InMemoryRuns, snapshot: RunState) -> None:
        self.runs = runs
        self.snapshot = snapshot
        self.positioned_reads = 0

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None:
        if after is None:
            return self.snapshot
        self.positioned_reads += 1
        return self.runs.read(run_id)

    def latest_position(self, run_id: str) -> Position | None:
        return self.runs.latest_position(run_id)

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        phase: StepPhase | str | None = None,
        require_complete: bool = False,
    ) -> list[RunState]:
        return self.runs.list(status=status, phase=phase, require_complete=require_complete)


def test_a_state_older_than_the_change_is_read_again_at_the_partition_end(
    runs: InMemoryRuns, clock: ManualClock, new_reactor: ReactorFactory
) -> None:
    DurableRun.start(
        runs, runs, run_id=RUN, agent="t", input="{}", prompt_version="t@1",
        owner="tests", source="test", clock=clock,
    )  # fmt: skip
    before = runs.read(RUN)  # what a lagging worker still answers
    assert before is not None
    with pytest.raises(RunSuspended):
        Agent(runs, clock).drive(
            DurableRun.attach(runs, runs, RUN, clock=clock, max_inline_wait_s=0.0)
        )
    reader = LaggingReader(runs, before)
    reactor = new_reactor(reader)
    reactor.on_retry_due(lambda due: None)
    feed(reactor, runs)
    assert reader.positioned_reads == 1
    assert reactor.pending_retries[RUN].not_before == not_before(runs)


def test_retry_handlers_need_a_reader() -> None:
    reactor = Reactor(bootstrap_servers="unused:9092", topic="unused", group_id="g")
    with pytest.raises(ValueError, match="runs="):
        reactor.on_retry_due(lambda due: None)


class RecordingReader:
    """Reads from ``runs`` and remembers what ``list`` was asked for."""

    def __init__(self, runs: InMemoryRuns) -> None:
        self.runs = runs
        self.asked: list[dict[str, Any]] = []

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None:
        return self.runs.read(run_id)

    def latest_position(self, run_id: str) -> Position | None:
        return self.runs.latest_position(run_id)

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        phase: StepPhase | str | None = None,
        require_complete: bool = False,
    ) -> list[RunState]:
        self.asked.append({"status": status, "phase": phase, "require_complete": require_complete})
        return self.runs.list(status=status, phase=phase, require_complete=require_complete)


def test_the_rebuild_asks_the_workers_for_runs_waiting_for_a_retry_only(
    runs: InMemoryRuns, clock: ManualClock, agent: Agent, new_reactor: ReactorFactory
) -> None:
    DurableRun.start(
        runs, runs, run_id="run-busy", agent="t", input="{}", prompt_version="t@1",
        owner="tests", source="test", clock=clock,
    ).step("check", lambda ctx: "clean")  # fmt: skip
    assert [s.run_id for s in runs.list(phase=StepPhase.RETRY_SCHEDULED)] == [RUN]
    assert len(runs.list(status=RunStatus.IN_PROGRESS)) == 2

    reader = RecordingReader(runs)
    reactor = new_reactor(reader)
    reactor.on_retry_due(lambda due: None)
    assert reactor.load_waiting_retries() == 1
    assert reader.asked == [
        {
            "status": RunStatus.IN_PROGRESS,
            "phase": StepPhase.RETRY_SCHEDULED,
            "require_complete": True,
        }
    ]
