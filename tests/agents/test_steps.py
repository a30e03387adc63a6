"""The durable-step rules over the real reducer, in process (InMemoryRuns, no broker).

"Crashing" an agent here means dropping its DurableRun and attaching a new one to the same
log, which is exactly what a restarted process sees: the recorded events, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from runstate.agents import (
    ActionOutcome,
    DurableRun,
    InMemoryRuns,
    ManualClock,
    RetryPolicy,
    StepContext,
    approve,
)
from runstate.errors import ReconcileRequired, RunSuspended, StepAttemptFailed, StepError
from runstate.runs.reducer import RejectCode
from runstate.runs.state import ActionState, RunStatus, StepPhase
from runstate.schemas.events import (
    AgentEvent,
    ExternalActionIntended,
    FailureReason,
    RetryScheduled,
    RunCancelled,
    StepFailed,
    StepStarted,
)
from runstate.streams.producer import Delivery

RunFactory = Callable[..., DurableRun]


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def new_run(runs: InMemoryRuns, clock: ManualClock) -> RunFactory:
    def make(run_id: str = "run-1", **options: object) -> DurableRun:
        return DurableRun.start(
            runs,
            runs,
            run_id=run_id,
            agent="credit-limit",
            input='{"limit": 50000}',
            prompt_version="credit@3",
            owner="loans-desk",
            source="test",
            clock=clock,
            **options,
        )

    return make


def attach(
    runs: InMemoryRuns, clock: ManualClock, run_id: str = "run-1", **kw: object
) -> DurableRun:
    return DurableRun.attach(runs, runs, run_id, clock=clock, **kw)


def types(runs: InMemoryRuns, run_id: str = "run-1") -> list[str]:
    return [e.event_type for e in runs.events_of(run_id)]


def test_a_completed_step_is_not_run_again_after_a_restart(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    calls: list[str] = []

    def check_form(ctx: StepContext) -> str:
        calls.append(ctx.step)
        return '{"phone": "+77011234567"}'

    run = new_run()
    assert run.step("check_form", check_form) == '{"phone": "+77011234567"}'
    again = attach(runs, clock)
    assert again.step("check_form", check_form) == '{"phone": "+77011234567"}'
    assert calls == ["check_form"]
    # Each process claims the run (the lease); the completed step is not run again.
    assert types(runs) == ["RunStarted", "RunClaimed", "StepStarted", "StepCompleted", "RunClaimed"]
    assert runs.rejected == []


def test_call_once_calls_the_system_once_for_the_same_key(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    sent: list[str] = []

    def body(ctx: StepContext) -> str:
        result = ctx.call_once("run-1:email", lambda: sent.append("x") or "msg-1", system="email")
        second = ctx.call_once("run-1:email", lambda: sent.append("y") or "msg-2", system="email")
        assert (result.replayed, second.replayed, second.external_id) == (False, True, "msg-1")
        return result.external_id

    new_run().step("send_email", body)
    assert sent == ["x"]
    action = runs.read("run-1").external_action("run-1:email")  # type: ignore[union-attr]
    assert action is not None and (action.state, action.external_id) == (
        ActionState.RECORDED,
        "msg-1",
    )


def _crash_after_intent(runs: InMemoryRuns, run: DurableRun) -> None:
    """What a process that died right after calling the provider leaves in the log."""
    run._emit(StepStarted, step="send_email", step_index=0, attempt=1)
    run._emit(ExternalActionIntended, step="send_email", idempotency_key="k", system="email")


def test_unknown_outcome_is_reconciled_and_not_called_again(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    _crash_after_intent(runs, new_run())
    sent: list[str] = []
    looked_up: list[str] = []

    def reconcile(key: str) -> ActionOutcome | None:
        looked_up.append(key)
        return ActionOutcome("msg-1", output_ref="found")

    def body(ctx: StepContext) -> str:
        r = ctx.call_once(
            "k", lambda: sent.append("x") or "msg-2", system="email", reconcile=reconcile
        )
        assert r.reconciled
        return r.external_id

    assert attach(runs, clock).step("send_email", body) == "msg-1"
    assert (sent, looked_up) == ([], ["k"])
    state = runs.read("run-1")
    assert state is not None and state.status is RunStatus.IN_PROGRESS
    # the interrupted attempt is on record as failed; the second attempt completed
    assert types(runs)[-5:] == [
        "StepFailed",
        "RetryScheduled",
        "StepStarted",
        "ExternalActionRecorded",
        "StepCompleted",
    ]


def test_unknown_outcome_not_found_by_reconcile_is_called(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    _crash_after_intent(runs, new_run())
    sent: list[str] = []

    def body(ctx: StepContext) -> str:
        return ctx.call_once(
            "k", lambda: sent.append("x") or "msg-9", system="email", reconcile=lambda k: None
        ).external_id

    assert attach(runs, clock).step("send_email", body) == "msg-9"
    assert sent == ["x"]


def test_unknown_outcome_without_reconcile_fails_the_run_for_a_person(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    _crash_after_intent(runs, new_run())
    sent: list[str] = []

    def body(ctx: StepContext) -> str:
        return ctx.call_once("k", lambda: sent.append("x") or "m", system="email").external_id

    with pytest.raises(ReconcileRequired, match="check email"):
        attach(runs, clock).step("send_email", body)
    state = runs.read("run-1")
    assert state is not None
    assert (state.status, state.needs_attention, sent) == (RunStatus.FAILED, True, [])


def test_an_intent_the_processor_refused_is_never_followed_by_the_action(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    """An operator cancels the run while the step body runs: the reducer refuses the
    ExternalActionIntended (the run ended), so nothing would record the action's outcome and
    a restart could not tell it happened. The SDK must stop before calling the system."""
    sent: list[str] = []

    def body(ctx: StepContext) -> str:
        runs.emit(runs.new_event(RunCancelled, "run-1", by="ops", reason="customer withdrew"))
        return ctx.call_once("k", lambda: sent.append("x") or "m", system="email").external_id

    with pytest.raises(StepError, match="was not applied"):
        new_run().step("send_email", body)
    assert sent == []
    assert [r.event.event_type for r in runs.rejected] == ["ExternalActionIntended"]
    state = runs.read("run-1")
    assert state is not None and state.status is RunStatus.CANCELLED
    assert state.external_action("k") is None
    assert "ExternalActionRecorded" not in types(runs)


class _KeyTakenFirst:
    """An event sink where a second writer's intent for the same key lands just before ours,
    after the SDK read the state (the race one process per run is meant to rule out)."""

    def __init__(self, runs: InMemoryRuns, *, step: str, system: str) -> None:
        self.runs = runs
        self.step = step
        self.system = system

    def new_event(self, cls: type[AgentEvent], run_id: str, **fields: object) -> AgentEvent:
        return self.runs.new_event(cls, run_id, **fields)

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery:
        if isinstance(event, ExternalActionIntended):
            self.runs.emit(
                self.runs.new_event(
                    ExternalActionIntended,
                    event.run_id,
                    step=self.step,
                    idempotency_key=event.idempotency_key,
                    system=self.system,
                    producer="another-agent-process",
                )
            )
        return self.runs.emit(event)


@pytest.mark.parametrize(
    ("step", "system"), [("other_step", "email"), ("send_email", "sms")], ids=["step", "system"]
)
def test_an_intent_refused_because_another_writer_took_the_key_is_not_acted_on(
    runs: InMemoryRuns, clock: ManualClock, step: str, system: str
) -> None:
    sent: list[str] = []

    def body(ctx: StepContext) -> str:
        return ctx.call_once("k", lambda: sent.append("x") or "m", system="email").external_id

    sink = _KeyTakenFirst(runs, step=step, system=system)
    run = DurableRun.start(
        sink, runs, run_id="run-1", agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test", clock=clock,
    )  # fmt: skip
    with pytest.raises(StepError, match="was not applied"):
        run.step("send_email", body)
    assert sent == []
    assert [r.rejection.code for r in runs.rejected] == [RejectCode.ACTION_CONFLICT]


def test_a_failed_attempt_waits_for_its_not_before_then_only_that_step_retries(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    attempts: list[int] = []

    def scoring(ctx: StepContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise StepAttemptFailed(FailureReason.TIMEOUT, "scoring did not answer")
        return "score:712"

    run = new_run(default_retry=RetryPolicy(max_attempts=3, base_s=5.0))
    assert run.step("scoring", scoring) == "score:712"
    assert attempts == [1, 2]
    assert clock.slept == [5.0]
    failed = next(e for e in runs.events_of("run-1") if isinstance(e, StepFailed))
    scheduled = next(e for e in runs.events_of("run-1") if isinstance(e, RetryScheduled))
    assert failed.reason is FailureReason.TIMEOUT
    assert scheduled.not_before == failed.occurred_at + timedelta(seconds=5)


def test_after_a_restart_the_retry_waits_for_the_recorded_time(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    def always_times_out(ctx: StepContext) -> str:
        raise TimeoutError("no answer")

    run = new_run(default_retry=RetryPolicy(max_attempts=3, base_s=300.0), max_inline_wait_s=1)
    with pytest.raises(RunSuspended) as suspended:
        run.step("scoring", always_times_out)
    state = runs.read("run-1")
    assert state is not None and state.step_phase is StepPhase.RETRY_SCHEDULED
    assert suspended.value.until == state.retry_not_before
    started = types(runs).count("StepStarted")

    restarted = attach(runs, clock, max_inline_wait_s=1)
    with pytest.raises(RunSuspended):
        restarted.step("scoring", lambda ctx: "score")
    assert types(runs).count("StepStarted") == started  # no attempt before not-before

    clock.advance(301)
    assert attach(runs, clock).step("scoring", lambda ctx: "score:1") == "score:1"
    last_start = [e for e in runs.events_of("run-1") if isinstance(e, StepStarted)][-1]
    assert state.retry_not_before is not None
    assert last_start.attempt == 2 and last_start.occurred_at >= state.retry_not_before


def test_exhausted_retries_fail_the_run_with_the_reason(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    def empty(ctx: StepContext) -> str:
        raise StepAttemptFailed(FailureReason.EMPTY_RESPONSE)

    run = new_run(default_retry=RetryPolicy(max_attempts=2, base_s=0.1))
    with pytest.raises(StepError, match="all 2 attempts failed"):
        run.step("scoring", empty)
    state = runs.read("run-1")
    assert state is not None
    assert (state.status, state.last_error_reason) == (
        RunStatus.FAILED,
        FailureReason.EMPTY_RESPONSE,
    )


def test_a_non_retryable_reason_fails_at_once(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    def rejected(ctx: StepContext) -> str:
        raise StepAttemptFailed(FailureReason.REJECTED_BY_SERVICE, "422")

    with pytest.raises(StepError, match="not retryable"):
        new_run().step("scoring", rejected)
    assert types(runs).count("StepStarted") == 1


def test_steps_cannot_run_after_the_run_ended(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    run = new_run()
    run.complete()
    with pytest.raises(StepError, match="completed"):
        run.step("late", lambda ctx: None)


def test_approval_suspends_then_resumes_at_the_next_step(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    subject = {"company": "Acme", "limit": 50000}
    notified: list[str] = []

    def notify(ctx: StepContext) -> None:
        ctx.call_once("notify-manager", lambda: notified.append("m") or "n-1", system="notify")

    def agent(run: DurableRun) -> str | None:
        run.step("check_form", lambda ctx: "clean")
        decision = run.await_approval(
            "manager_approval",
            approver="manager.aliya",
            subject=subject,
            due=timedelta(hours=4),
            on_request=notify,
        )
        assert decision.granted and decision.decided_by == "manager.aliya"
        return run.step("scoring", lambda ctx: "score:700")

    with pytest.raises(RunSuspended):
        agent(new_run())
    state = runs.read("run-1")
    assert state is not None and state.status is RunStatus.WAITING_APPROVAL
    count = len(runs.events)
    with pytest.raises(RunSuspended):
        agent(attach(runs, clock))
    assert types(runs)[count:] == ["RunClaimed"]  # waiting again emits only the claim

    approve(runs, runs, "run-1", by="manager.aliya")
    assert agent(attach(runs, clock)) == "score:700"
    assert agent(attach(runs, clock)) == "score:700"
    assert notified == ["m"]
    assert types(runs).count("StepStarted") == 3
    assert runs.rejected == []


def test_an_approval_of_another_subject_is_not_acted_on(
    runs: InMemoryRuns, clock: ManualClock, new_run: RunFactory
) -> None:
    from runstate.errors import ApprovalError

    run = new_run()
    with pytest.raises(RunSuspended):
        run.await_approval("ok", approver="m", subject={"limit": 1}, due=timedelta(hours=1))
    approve(runs, runs, "run-1", by="m")
    with pytest.raises(ApprovalError, match="data changed"):
        attach(runs, clock).await_approval(
            "ok", approver="m", subject={"limit": 2}, due=timedelta(hours=1)
        )
