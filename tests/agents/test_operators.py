"""The SDK's checks for people: who may decide, and the operator commands (in process)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runstate.agents import DurableRun, InMemoryRuns, RetryPolicy, StepContext, approve, reject
from runstate.agents.operators import cancel, resolve_action, retry_step
from runstate.errors import IllegalTransition, ReconcileRequired, RunSuspended, StepError
from runstate.identity import NotAuthorized, Principal, Role
from runstate.runs.state import ActionState, RunStatus
from runstate.schemas.events import ApproverKind, ExternalActionIntended, StepStarted

BOB = Principal("manager.bob", frozenset({Role.APPROVER}), frozenset({"credit-managers"}))
EVE = Principal("intern.eve", frozenset({Role.APPROVER}), frozenset({"sales"}))
ANN = Principal("admin.ann", frozenset({Role.ADMIN}))
JOE = Principal("ops.joe", frozenset({Role.OPERATOR}))


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


def _start(runs: InMemoryRuns, run_id: str = "run-1") -> DurableRun:
    return DurableRun.start(
        runs, runs, run_id=run_id, agent="a", input="{}", prompt_version="p", owner="o",
        source="test", max_inline_wait_s=0.0,
    )  # fmt: skip


def _waiting(runs: InMemoryRuns, approver: str, kind: ApproverKind) -> None:
    run = _start(runs)
    with pytest.raises(RunSuspended):
        run.await_approval(
            "limit", approver=approver, approver_kind=kind, subject={"limit": 1},
            due=timedelta(hours=1),
        )  # fmt: skip


def test_only_the_approver_a_member_or_an_admin_with_a_reason_decides(
    runs: InMemoryRuns,
) -> None:
    _waiting(runs, "credit-managers", ApproverKind.GROUP)
    count = len(runs.events)
    with pytest.raises(NotAuthorized, match="member of group 'credit-managers'"):
        approve(runs, runs, "run-1", by=EVE)
    with pytest.raises(NotAuthorized, match="override-reason"):
        reject(runs, runs, "run-1", by=ANN, reason="no")
    # A bare name is refused by the processor's rule (the request enforces its decider).
    with pytest.raises(NotAuthorized, match=r"'intern\.eve' is not"):
        approve(runs, runs, "run-1", by="intern.eve")
    assert len(runs.events) == count
    receipt = reject(runs, runs, "run-1", by=ANN, reason="no", override_reason="audit hold")
    approval = receipt.state.approval
    assert approval is not None
    assert (approval.decided_by, approval.override_reason) == ("admin.ann", "audit hold")


def test_a_member_decides_and_the_event_carries_their_groups(runs: InMemoryRuns) -> None:
    _waiting(runs, "credit-managers", ApproverKind.GROUP)
    receipt = approve(runs, runs, "run-1", by=BOB)
    decision = runs.events[-1]
    assert getattr(decision, "by_groups", None) == ("credit-managers",)
    assert receipt.state.status is RunStatus.IN_PROGRESS


def _given_up(runs: InMemoryRuns) -> DurableRun:
    run = _start(runs)
    run.step("collect", lambda ctx: "c")

    def score(ctx: StepContext) -> str:
        raise TimeoutError("scoring slow")

    with pytest.raises(StepError, match="the run is failed"):
        run.step("score", score, retry=RetryPolicy(max_attempts=1))
    return run


def test_retry_step_needs_an_operator_and_a_failed_run(runs: InMemoryRuns) -> None:
    run = _given_up(runs)
    with pytest.raises(NotAuthorized, match="needs the role operator"):
        retry_step(runs, runs, "run-1", by=BOB)
    with pytest.raises(IllegalTransition, match="stopped at step 'score'"):
        retry_step(runs, runs, "run-1", by=JOE, step="collect")
    receipt = retry_step(runs, runs, "run-1", by=JOE, reason="fixed")
    assert (receipt.state.status, receipt.state.current_step) == (RunStatus.IN_PROGRESS, "score")
    with pytest.raises(IllegalTransition, match="only a failed run"):
        retry_step(runs, runs, "run-1", by=JOE)
    again = DurableRun.attach(runs, runs, "run-1", max_inline_wait_s=0.0)
    assert again.step("collect", lambda ctx: pytest.fail("collect ran again")) == "c"
    assert again.step("score", lambda ctx: "s") == "s"
    assert run.run_id == again.run_id


def test_resolve_found_records_and_the_run_goes_on(runs: InMemoryRuns) -> None:
    run = _start(runs)
    calls: list[str] = []

    def pay(ctx: StepContext) -> str:
        return ctx.call_once("pay-1", lambda: calls.append("x") or "T1", system="bank").external_id

    # An intent with no record: as if the process died after the call.
    runs.emit(runs.new_event(StepStarted, "run-1", step="pay", step_index=0, attempt=1))
    runs.emit(
        runs.new_event(
            ExternalActionIntended, "run-1", step="pay", idempotency_key="pay-1", system="bank"
        )
    )
    attached = DurableRun.attach(runs, runs, "run-1", max_inline_wait_s=0.0)
    with pytest.raises(ReconcileRequired):
        attached.step("pay", pay)
    assert runs.read("run-1").status is RunStatus.FAILED  # type: ignore[union-attr]
    with pytest.raises(NotAuthorized):
        resolve_action(runs, runs, "run-1", "pay-1", by=EVE, external_id="T1")
    with pytest.raises(IllegalTransition, match="no action with this key"):
        resolve_action(runs, runs, "run-1", "nope", by=JOE, external_id=None)
    receipt = resolve_action(runs, runs, "run-1", "pay-1", by=JOE, external_id="T1")
    action = receipt.state.external_action("pay-1")
    assert action is not None and action.state is ActionState.RECORDED
    assert receipt.state.status is RunStatus.IN_PROGRESS
    resumed = DurableRun.attach(runs, runs, "run-1", max_inline_wait_s=0.0)
    assert resumed.step("pay", pay) == "T1"
    assert calls == []  # recorded by the operator: never called
    assert run.run_id == "run-1"


def test_cancel_needs_a_reason_and_closes_a_failed_run(runs: InMemoryRuns) -> None:
    _given_up(runs)
    with pytest.raises(IllegalTransition, match="give a reason"):
        cancel(runs, runs, "run-1", by=JOE, reason=" ")
    receipt = cancel(runs, runs, "run-1", by=JOE, reason="customer withdrew")
    assert (receipt.state.status, receipt.state.cancelled_by) == (RunStatus.CANCELLED, "ops.joe")
    with pytest.raises(IllegalTransition, match=r"nothing to do.*cancelled"):
        cancel(runs, runs, "run-1", by=JOE, reason="again")
