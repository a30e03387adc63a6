"""The ``RunStateChanged`` line of each applied event, field by field.

The reactor, the notifier and the demo read these fields without looking at the state, so a
field that is dropped or left at its default is a wrong notification, not a cosmetic slip.
"""

from __future__ import annotations

from runstate.runs.reducer import Applied, Duplicate, DuplicateWhy, apply
from runstate.runs.state import ApprovalOutcome, RunState, RunStateChanged
from runstate.schemas.events import AgentEvent, FailureReason
from tests.factories import RunBuilder
from tests.runs.conftest import BuilderFactory, folded, running


def change_of(state: RunState | None, event: AgentEvent) -> RunStateChanged:
    outcome = apply(state, event)
    assert isinstance(outcome, Applied), outcome
    return outcome.change


def test_the_change_names_the_events_step_when_the_run_is_in_none(
    builder: BuilderFactory,
) -> None:
    b = builder()
    state = folded(b)
    assert state.current_step is None

    assert change_of(state, b.model_call("ghost")).step == "ghost"


def test_the_change_carries_the_failure_reason(builder: BuilderFactory) -> None:
    b = running(builder)
    before = folded(b)
    step_failed = b.fail_step("collect", reason=FailureReason.REJECTED_BY_SERVICE)
    assert change_of(before, step_failed).reason == FailureReason.REJECTED_BY_SERVICE.value

    b = running(builder)
    before = folded(b)
    assert change_of(before, b.fail()).reason == FailureReason.TIMEOUT.value


def test_the_change_carries_the_cancel_reason(builder: BuilderFactory) -> None:
    b = running(builder)
    before = folded(b)

    assert change_of(before, b.cancel()).reason == "customer withdrew"


def test_events_that_are_not_failures_carry_no_reason(builder: BuilderFactory) -> None:
    b = builder()
    state: RunState | None = None
    b.step("collect", model_calls=1)
    for event in b.events:
        outcome = apply(state, event)
        assert isinstance(outcome, Applied), outcome
        assert outcome.change.reason is None, event.event_type
        state = outcome.state


def test_the_change_carries_the_approval_request(builder: BuilderFactory) -> None:
    b = running(builder)
    before = folded(b)
    requested = b.request_approval("collect")

    change = change_of(before, requested)

    assert change.approval_outcome is ApprovalOutcome.PENDING
    assert change.approver == "managers"
    assert change.approval_due_at == requested.due_at
    assert change.decided_by is None


def test_the_change_carries_needs_attention(builder: BuilderFactory) -> None:
    b = running(builder)
    before = folded(b)

    assert change_of(before, b.fail(needs_attention=True)).needs_attention is True
    b = running(builder)
    assert change_of(folded(b), b.fail()).needs_attention is False


def test_the_tenant_of_run_started_is_kept() -> None:
    b = RunBuilder("run-t")
    started = b.start(tenant="acme")

    outcome = apply(None, started)
    assert isinstance(outcome, Applied)
    assert outcome.state.tenant == "acme"


def test_an_offset_at_or_below_the_last_is_a_duplicate_that_keeps_the_state(
    builder: BuilderFactory,
) -> None:
    b = builder()
    first = apply(None, b.events[0], offset=5)
    assert isinstance(first, Applied)
    later = b.model_call()

    for offset in (4, 5):
        outcome = apply(first.state, later, offset=offset)
        assert isinstance(outcome, Duplicate)
        assert outcome.state is first.state
        assert outcome.why is DuplicateWhy.OFFSET_SEEN
    assert isinstance(apply(first.state, later, offset=6), Applied)
