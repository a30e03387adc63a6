"""``confirm_starts=False``: StepStarted sent as the body starts and acknowledged with
StepCompleted, one round trip per step. What it keeps (the same events and state, the read
before every external call, retries confirmed first) and what it gives up (an attempt killed
before its StepStarted left is not recorded; a fence is found after the body), each shown
against the confirmed default.

:class:`QueueingRuns` is :class:`InMemoryRuns` with a producer's queue: ``send`` holds an
event until ``flush`` (or an ``emit``, which flushes first) "delivers" it, and
:meth:`QueueingRuns.die` drops what was never delivered, as a process killed before its
producer wrote the request does.
"""

from __future__ import annotations

from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import pytest

from runstate.agents import DurableRun, InMemoryRuns, ManualClock, RetryPolicy, StepContext
from runstate.agents.ports import QueueingSink
from runstate.errors import RunFenced, StepAttemptFailed
from runstate.runs.reducer import RejectCode
from runstate.runs.state import StepPhase
from runstate.schemas.events import AgentEvent
from runstate.streams.producer import Delivery


class QueueingRuns(InMemoryRuns):
    """In-memory runs whose sends wait in a queue until flushed (a producer's, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[AgentEvent, Future[Delivery]]] = []
        self.round_trips = 0

    def send(self, event: AgentEvent) -> Future[Delivery]:
        future: Future[Delivery] = Future()
        self.pending.append((event, future))
        return future

    def flush(self, timeout_s: float = 60.0) -> None:
        if self.pending:
            self.round_trips += 1
        while self.pending:
            event, future = self.pending.pop(0)
            future.set_result(super().emit(event))

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery:
        self.pending.append((event, Future()))
        self.flush()
        return self.latest_position(event.run_id)  # type: ignore[return-value]

    def die(self) -> None:
        """The process is killed: what was never delivered is gone."""
        self.pending.clear()


def start(runs: InMemoryRuns, holder: str = "proc-a", **kw: Any) -> DurableRun:
    return DurableRun.start(
        runs, runs, run_id="run-1", agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test", clock=ManualClock(), holder=holder, lease=timedelta(seconds=30), **kw,
    )  # fmt: skip


def phases(runs: InMemoryRuns) -> list[tuple[str, Any]]:
    return [
        (e.event_type, getattr(e, "attempt", None))
        for e in runs.events_of("run-1")
        if e.event_type.startswith("Step") or e.event_type.startswith("Retry")
    ]


def test_the_queueing_double_is_a_queueing_sink() -> None:
    assert isinstance(QueueingRuns(), QueueingSink)
    assert not isinstance(InMemoryRuns(), QueueingSink)


@pytest.mark.parametrize("confirm", [True, False])
def test_a_step_takes_one_round_trip_unconfirmed_and_two_confirmed(confirm: bool) -> None:
    runs = QueueingRuns()
    run = start(runs, confirm_starts=confirm)
    before = runs.round_trips
    seen: list[StepPhase | None] = []

    def body(ctx: StepContext) -> str:
        s = runs.read("run-1")
        seen.append(s.step_phase if s is not None else None)
        return "out"

    for i in range(5):
        assert run.step(f"s{i}", body) == "out"
    assert runs.round_trips - before == (10 if confirm else 5)
    # Confirmed: the body runs once its start is stored; unconfirmed: the run is still where
    # the previous step left it.
    if confirm:
        assert seen == [StepPhase.RUNNING] * 5
    else:
        assert seen == [None] + [StepPhase.COMPLETED] * 4
    s = runs.read("run-1")
    assert s is not None and [c.step for c in s.completed_steps] == [f"s{i}" for i in range(5)]
    assert run.folded == s


def test_unconfirmed_steps_make_the_same_events_and_state_through_retries_and_actions() -> None:
    results = []
    for confirm in (True, False):
        runs = QueueingRuns()
        run = start(runs, confirm_starts=confirm)
        calls: list[str] = []

        def flaky(ctx: StepContext) -> str:
            if ctx.attempt < 3:
                raise StepAttemptFailed("timeout", "no answer")
            return "ok"

        def act(ctx: StepContext, calls: list[str] = calls) -> str:
            return ctx.call_once("k", lambda: calls.append("x") or "ext-1", system="s").external_id

        assert run.step("flaky", flaky, retry=RetryPolicy(max_attempts=3, base_s=1.0)) == "ok"
        assert run.step("act", act) == "ext-1"
        run.complete("done")
        s = runs.read("run-1")
        assert s is not None and run.folded == s and calls == ["x"]
        results.append(([e.event_type for e in runs.events_of("run-1")], s.status, s.step_index))
    assert results[0] == results[1]


def test_the_intent_of_an_action_follows_its_step_start_and_is_read_before_the_call() -> None:
    runs = QueueingRuns()
    run = start(runs, confirm_starts=False)
    stored: list[list[str]] = []

    def act(ctx: StepContext) -> str:
        def call() -> str:
            stored.append([e.event_type for e in runs.events_of("run-1")][-2:])
            return "ext-1"

        return ctx.call_once("k", call, system="s").external_id

    assert run.step("act", act) == "ext-1"
    assert stored == [["StepStarted", "ExternalActionIntended"]]


def test_a_retry_confirms_its_start_before_the_body() -> None:
    runs = QueueingRuns()
    run = start(runs, confirm_starts=False)
    seen: list[tuple[int, StepPhase | None, int]] = []

    def flaky(ctx: StepContext) -> str:
        s = runs.read("run-1")
        assert s is not None
        seen.append((ctx.attempt, s.step_phase, s.step_attempt))
        if ctx.attempt < 3:
            raise StepAttemptFailed("timeout", "no answer")
        return "ok"

    assert run.step("flaky", flaky, retry=RetryPolicy(max_attempts=3, base_s=1.0)) == "ok"
    # Attempt 1's start is still queued in its body; attempts 2 and 3 are stored first.
    assert seen == [
        (1, None, 0),
        (2, StepPhase.RUNNING, 2),
        (3, StepPhase.RUNNING, 3),
    ]


@pytest.mark.parametrize("confirm", [True, False])
def test_a_process_killed_in_a_body_and_resumed(confirm: bool) -> None:
    runs = QueueingRuns()
    run = start(runs, confirm_starts=confirm)

    class Killed(BaseException):
        pass

    def dies(ctx: StepContext) -> str:
        runs.die()
        raise Killed

    with pytest.raises(Killed):
        run.step("send", dies)
    again = DurableRun.attach(runs, runs, "run-1", clock=ManualClock(), holder="proc-b")
    assert again.step("send", lambda ctx: f"attempt-{ctx.attempt}") == (
        "attempt-2" if confirm else "attempt-1"
    )
    if confirm:
        # The start was stored: the interrupted attempt is recorded and counted.
        assert phases(runs) == [
            ("StepStarted", 1),
            ("StepFailed", 1),
            ("RetryScheduled", 2),
            ("StepStarted", 2),
            ("StepCompleted", 2),
        ]
    else:
        # What an unconfirmed start gives up: killed before it left, no trace of attempt 1.
        assert phases(runs) == [("StepStarted", 1), ("StepCompleted", 1)]


@pytest.mark.parametrize("confirm", [True, False])
def test_a_fenced_process_finds_out_before_the_body_confirmed_and_after_it_unconfirmed(
    confirm: bool,
) -> None:
    runs = QueueingRuns()
    first = start(runs, confirm_starts=confirm)
    first.step("one", lambda ctx: "1")
    DurableRun.attach(runs, runs, "run-1", clock=ManualClock(), holder="proc-b")
    ran: list[str] = []
    with pytest.raises(RunFenced, match=r"claimed by proc-b \(epoch 2\)"):
        first.step("two", lambda ctx: ran.append("two") or "2")
    assert ran == ([] if confirm else ["two"])
    refused = [(r.event.event_type, r.rejection.code) for r in runs.rejected]
    assert refused == [("StepStarted", RejectCode.FENCED)] + (
        [] if confirm else [("StepCompleted", RejectCode.FENCED)]
    )
    s = runs.read("run-1")
    assert s is not None and [c.step for c in s.completed_steps] == ["one"]


def test_an_external_call_of_a_fenced_process_is_never_made_unconfirmed() -> None:
    runs = QueueingRuns()
    first = start(runs, confirm_starts=False)
    DurableRun.attach(runs, runs, "run-1", clock=ManualClock(), holder="proc-b")
    sent: list[str] = []

    def act(ctx: StepContext) -> str:
        return ctx.call_once("k", lambda: sent.append("x") or "e", system="s").external_id

    with pytest.raises(RunFenced):
        first.step("act", act)
    assert sent == []


def test_a_sink_that_cannot_queue_confirms_every_start() -> None:
    runs = InMemoryRuns()
    run = start(runs, confirm_starts=False)
    seen: list[StepPhase | None] = []

    def body(ctx: StepContext) -> str:
        s = runs.read("run-1")
        seen.append(s.step_phase if s is not None else None)
        return "out"

    run.step("s", body)
    assert seen == [StepPhase.RUNNING]
