"""What a durable step writes down, field by field, and when it reads.

test_steps.py checks the rules (skip what is done, retry after not-before, call once); these
check that the recorded facts a restarted agent decides from are the right ones. Each was
found by ``make mutation``: a one-token change to ``agents/steps.py`` that no test noticed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from runstate.agents import (
    ActionOutcome,
    ActionResult,
    DurableRun,
    InMemoryRuns,
    ManualClock,
    RetryPolicy,
    StepContext,
    approve,
)
from runstate.agents.approvals import canonical_json
from runstate.agents.retry import NO_RETRY
from runstate.errors import ReconcileRequired, RunSuspended, StepError
from runstate.schemas.events import (
    AgentEvent,
    ApprovalRequested,
    ApproverKind,
    ExternalActionIntended,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from tests.agents.recording import PositionRecordingReader

RUN = "run-1"


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def start(runs: InMemoryRuns, clock: ManualClock, **options: Any) -> DurableRun:
    return DurableRun.start(
        runs, runs, run_id=RUN, agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test", clock=clock, **options,
    )  # fmt: skip


def events(runs: InMemoryRuns, cls: type[AgentEvent]) -> list[Any]:
    return [e for e in runs.events_of(RUN) if isinstance(e, cls)]


def test_every_read_waits_for_the_last_event_this_process_wrote(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    start(runs, clock).step("a", lambda ctx: "done")
    reader = PositionRecordingReader(runs)
    before = runs.latest_position(RUN)
    run = DurableRun.attach(runs, reader, RUN, clock=clock)  # type: ignore[arg-type]
    # the run as committed (a read that does not wait, for the claim's epoch), then at its
    # own claim of the run (the lease): a state holding every event before the claim
    assert reader.afters == [None, runs.latest_position(RUN)]
    assert before is not None and reader.afters[1].offset > before.offset
    run.step("b", lambda ctx: "done")
    run.state()
    assert reader.afters[-1] == runs.latest_position(RUN)  # read-your-writes


def test_the_run_records_its_tenant_and_its_output(runs: InMemoryRuns, clock: ManualClock) -> None:
    run = start(runs, clock, tenant="acme")
    assert run.complete(output_ref="limit:50000") == runs.latest_position(RUN)
    assert events(runs, RunStarted)[0].tenant == "acme"
    assert events(runs, RunCompleted)[0].output_ref == "limit:50000"


def test_a_model_call_is_recorded_with_its_step_and_tags(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    def body(ctx: StepContext) -> str:
        ctx.record_model_call("req-1", "gpt-4o-mini", tags={"route": "gateway"})
        return "ok"

    start(runs, clock).step("check_form", body)
    [called] = events(runs, ModelCalled)
    assert (called.model_request_id, called.model, called.step, called.tags) == (
        "req-1",
        "gpt-4o-mini",
        "check_form",
        {"route": "gateway"},
    )


def test_steps_are_numbered_in_order_and_a_retry_keeps_its_number(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    seen: list[tuple[str, int, int]] = []

    def body(ctx: StepContext) -> str:
        seen.append((ctx.step, ctx.step_index, ctx.attempt))
        if ctx.step == "b" and ctx.attempt == 1:
            raise TimeoutError()
        return ctx.step

    run = start(runs, clock, default_retry=RetryPolicy(base_s=0.0))
    run.step("a", body, input_ref="form:1")
    run.step("b", body)
    assert seen == [("a", 0, 1), ("b", 1, 1), ("b", 1, 2)]
    started = [(e.step, e.step_index, e.attempt, e.input_ref) for e in events(runs, StepStarted)]
    assert started == [("a", 0, 1, "form:1"), ("b", 1, 1, None), ("b", 1, 2, None)]
    assert events(runs, StepFailed)[0].message == "timed out"  # TimeoutError() says nothing


def test_a_failure_message_names_the_exception_and_is_cut_to_1000_characters(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    boom = ValueError("x" * 5000)

    def body(ctx: StepContext) -> str:
        raise boom

    with pytest.raises(StepError, match="ValueError: xxx") as failed:
        start(runs, clock, default_retry=NO_RETRY).step("scoring", body)
    assert failed.value.__cause__ is boom
    [step_failed] = events(runs, StepFailed)
    [run_failed] = events(runs, RunFailed)
    assert step_failed.message == ("ValueError: " + "x" * 5000)[:1000]
    assert (run_failed.step, run_failed.reason) == ("scoring", FailureReason.OTHER)
    assert run_failed.message.startswith("other is not retryable")
    assert "ValueError: xxx" in run_failed.message and len(run_failed.message) == 1000


def test_an_interrupted_attempt_is_recorded_as_such_and_retried_at_once(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    crashed = start(runs, clock)
    crashed._emit(StepStarted, step="scoring", step_index=0, attempt=1)
    resumed = DurableRun.attach(runs, runs, RUN, clock=clock)  # default policy: base_s 1 s
    assert resumed.step("scoring", lambda ctx: "score") == "score"
    [failed] = events(runs, StepFailed)
    [scheduled] = events(runs, RetryScheduled)
    assert failed.reason is FailureReason.OTHER
    assert failed.message == "interrupted: the agent process stopped during this attempt"
    assert scheduled.not_before == failed.occurred_at  # a crash says nothing about the service
    assert clock.slept == []


def test_a_crash_between_failure_and_schedule_decides_from_the_recorded_failure(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    crashed = start(runs, clock)
    crashed._emit(StepStarted, step="scoring", step_index=0, attempt=1)
    crashed._emit(
        StepFailed, step="scoring", attempt=1, reason=FailureReason.TIMEOUT, message="no answer"
    )
    only_timeouts = RetryPolicy(
        max_attempts=2, base_s=5.0, retry_on=frozenset({FailureReason.TIMEOUT})
    )
    now = clock.now()
    resumed = DurableRun.attach(runs, runs, RUN, clock=clock, default_retry=only_timeouts)
    assert resumed.step("scoring", lambda ctx: f"attempt {ctx.attempt}") == "attempt 2"
    [scheduled] = events(runs, RetryScheduled)
    assert (scheduled.attempt, scheduled.not_before) == (2, now + timedelta(seconds=5))
    assert clock.slept == [5.0]


def test_a_crash_between_failure_and_schedule_gives_up_with_the_recorded_reason(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    crashed = start(runs, clock)
    crashed._emit(StepStarted, step="scoring", step_index=0, attempt=1)
    crashed._emit(
        StepFailed, step="scoring", attempt=1, reason=FailureReason.TIMEOUT, message="no answer"
    )
    resumed = DurableRun.attach(runs, runs, RUN, clock=clock, default_retry=NO_RETRY)
    with pytest.raises(StepError, match="no answer"):
        resumed.step("scoring", lambda ctx: "never")
    [run_failed] = events(runs, RunFailed)
    assert (run_failed.step, run_failed.reason) == ("scoring", FailureReason.TIMEOUT)
    assert run_failed.message == "all 1 attempts failed (last: timeout): no answer"


@pytest.mark.parametrize(
    ("backoff_s", "slept"),
    [(0.0, []), (0.5, [0.5]), (5.0, [5.0])],
    ids=["due now", "under a second", "exactly the inline limit"],
)
def test_a_retry_due_within_the_inline_limit_is_waited_for_in_process(
    runs: InMemoryRuns, clock: ManualClock, backoff_s: float, slept: list[float]
) -> None:
    def once(ctx: StepContext) -> str:
        if ctx.attempt == 1:
            raise TimeoutError("slow")
        return "ok"

    run = start(runs, clock, default_retry=RetryPolicy(base_s=backoff_s), max_inline_wait_s=5.0)
    assert run.step("scoring", once) == "ok"
    assert clock.slept == slept


def test_by_default_a_retry_more_than_a_minute_off_suspends_the_run(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    def slow(ctx: StepContext) -> str:
        raise TimeoutError("slow")

    run = start(runs, clock, default_retry=RetryPolicy(base_s=60.5))
    with pytest.raises(RunSuspended, match="resume the run then") as suspended:
        run.step("scoring", slow)
    [scheduled] = events(runs, RetryScheduled)
    assert (suspended.value.run_id, suspended.value.until) == (RUN, scheduled.not_before)
    assert clock.slept == []


def test_action_results_carry_the_key_and_the_recorded_output(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    results: list[ActionResult] = []

    def body(ctx: StepContext) -> str:
        call = lambda: ActionOutcome("msg-1", output_ref="sent:1")  # noqa: E731
        results.append(ctx.call_once("k", call, system="email"))
        results.append(ctx.call_once("k", call, system="email"))
        return "ok"

    start(runs, clock).step("send", body)
    assert results == [
        ActionResult("k", "msg-1", "sent:1"),
        ActionResult("k", "msg-1", "sent:1", replayed=True),
    ]
    action = runs.read(RUN).external_action("k")  # type: ignore[union-attr]
    assert action is not None and action.output_ref == "sent:1"


def _crash_after_intent(runs: InMemoryRuns, clock: ManualClock) -> None:
    crashed = start(runs, clock)
    crashed._emit(StepStarted, step="send", step_index=0, attempt=1)
    crashed._emit(ExternalActionIntended, step="send", idempotency_key="k", system="email")


def test_a_reconciled_action_carries_what_the_system_answered(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    _crash_after_intent(runs, clock)
    results: list[ActionResult] = []

    def body(ctx: StepContext) -> str:
        found = ActionOutcome("msg-7", output_ref="found:7")
        results.append(
            ctx.call_once("k", lambda: "never", system="email", reconcile=lambda k: found)
        )
        return "ok"

    DurableRun.attach(runs, runs, RUN, clock=clock).step("send", body)
    assert results == [ActionResult("k", "msg-7", "found:7", reconciled=True)]
    action = runs.read(RUN).external_action("k")  # type: ignore[union-attr]
    assert action is not None and (action.external_id, action.output_ref) == ("msg-7", "found:7")


def test_an_unknown_outcome_without_reconcile_is_failed_on_its_step_with_the_reason(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    _crash_after_intent(runs, clock)
    with pytest.raises(ReconcileRequired, match="no reconcile callback was given"):
        DurableRun.attach(runs, runs, RUN, clock=clock).step(
            "send", lambda ctx: ctx.call_once("k", lambda: "m", system="email").external_id
        )
    [run_failed] = events(runs, RunFailed)
    assert (run_failed.step, run_failed.needs_attention) == ("send", True)
    assert "check email for this key" in run_failed.message


def test_call_once_outside_a_step_is_refused_before_between_and_after_steps(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    run = start(runs, clock)
    with pytest.raises(StepError, match="outside a step"):
        run.call_once("k", lambda: "m", system="email")
    run.step("a", lambda ctx: "done")
    with pytest.raises(StepError, match="outside a step"):
        run.call_once("k", lambda: "m", system="email")
    with pytest.raises(RunSuspended):
        run.await_approval(
            "ok", approver="boss", subject="s", due=timedelta(hours=1), on_request=lambda ctx: None
        )
    with pytest.raises(StepError, match="outside a step"):
        run.call_once("k", lambda: "m", system="email")
    assert "ExternalActionIntended" not in [e.event_type for e in runs.events_of(RUN)]


def test_an_approval_as_the_first_step_is_step_0(runs: InMemoryRuns, clock: ManualClock) -> None:
    with pytest.raises(RunSuspended):
        start(runs, clock).await_approval(
            "ok", approver="boss", subject="s", due=timedelta(hours=1)
        )
    [started] = events(runs, StepStarted)
    assert (started.step, started.step_index, started.attempt) == ("ok", 0, 1)


def test_an_approval_request_records_what_was_asked_of_whom_until_when(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    subject = {"company": "Acme", "limit": 50000}
    asked: list[tuple[str, int, int]] = []
    run = start(runs, clock)
    run.step("check_form", lambda ctx: "clean")
    with pytest.raises(RunSuspended, match="waits for boss to approve") as suspended:
        run.await_approval(
            "approval",
            approver="boss",
            approver_kind=ApproverKind.GROUP,
            subject=subject,
            due=timedelta(hours=4),
            on_request=lambda ctx: asked.append((ctx.step, ctx.step_index, ctx.attempt)),
        )
    [requested] = events(runs, ApprovalRequested)
    due = clock.now() + timedelta(hours=4)
    assert (requested.approver, requested.approver_kind, requested.due_at) == (
        "boss",
        ApproverKind.GROUP,
        due,
    )
    assert requested.subject == canonical_json(subject)
    assert (suspended.value.run_id, suspended.value.until) == (RUN, due)
    assert asked == [("approval", 1, 1)]
    assert [(e.step, e.step_index, e.attempt) for e in events(runs, StepStarted)][-1] == (
        "approval",
        1,
        1,
    )
    with pytest.raises(RunSuspended) as again:  # a step while it waits: the same wait
        run.step("scoring", lambda ctx: "never")
    assert (again.value.run_id, again.value.until) == (RUN, due)


def test_a_request_interrupted_in_on_request_resumes_the_same_attempt(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    asked: list[tuple[int, int]] = []

    def flaky(ctx: StepContext) -> None:
        asked.append((ctx.step_index, ctx.attempt))
        if len(asked) == 1:
            raise ConnectionError("notifier down")

    run = start(runs, clock)
    run.step("check_form", lambda ctx: "clean")
    ask = {"approver": "boss", "subject": "s", "due": timedelta(hours=1), "on_request": flaky}
    with pytest.raises(ConnectionError):
        run.await_approval("approval", **ask)  # type: ignore[arg-type]
    with pytest.raises(RunSuspended):
        run.await_approval("approval", **ask)  # type: ignore[arg-type]
    assert asked == [(1, 1), (1, 1)]
    assert [e.step for e in events(runs, StepStarted)] == ["check_form", "approval"]
    approve(runs, runs, RUN, by="boss")
    assert run.await_approval("approval", **ask).granted  # type: ignore[arg-type]
    [*_, completed] = events(runs, StepCompleted)
    assert (completed.step, completed.attempt, completed.output_ref) == (
        "approval",
        1,
        "granted",
    )


def test_failing_a_run_by_hand_records_why_and_whether_a_person_must_look(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    first = start(runs, clock)
    delivery = first.fail(FailureReason.REJECTED_BY_SERVICE, "422 from bank", step="pay")
    [failed] = events(runs, RunFailed)
    assert delivery == runs.latest_position(RUN)
    assert (failed.step, failed.reason, failed.message, failed.needs_attention) == (
        "pay",
        FailureReason.REJECTED_BY_SERVICE,
        "422 from bank",
        False,
    )
    other = DurableRun.start(
        runs, runs, run_id="run-2", agent="a", input="{}", prompt_version="a@1", owner="o",
        source="test", clock=clock,
    )  # fmt: skip
    other.fail(FailureReason.OTHER, needs_attention=True)
    [failed] = [e for e in runs.events_of("run-2") if isinstance(e, RunFailed)]
    assert (failed.step, failed.message, failed.needs_attention) == (None, "", True)
