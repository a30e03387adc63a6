"""The run lease in the reducer: claims, fencing by epoch, expiry and renewal, legacy runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from runstate.runs.reducer import (
    Applied,
    Duplicate,
    DuplicateWhy,
    RejectCode,
    Rejected,
    apply,
    fold,
)
from runstate.runs.state import RunState, RunStatus
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ExternalActionIntended,
    ExternalActionRecorded,
    ModelCalled,
    RunClaimed,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from tests.factories import RunBuilder, plausible_runs
from tests.runs.conftest import BuilderFactory, applied, duplicate, folded, rejected


def claimed_run(builder: BuilderFactory, holder: str = "agent-a") -> RunBuilder:
    b = builder()
    b.claim(holder, lease_ms=30_000)
    return b


# --- claims ----------------------------------------------------------------------------


def test_the_first_claim_sets_epoch_holder_and_lease(builder: BuilderFactory) -> None:
    b = builder()
    claim = b.claim("agent-a", lease_ms=30_000)
    s = folded(b)
    assert (s.epoch, s.holder, s.lease_ms) == (1, "agent-a", 30_000)
    assert s.lease_until == claim.occurred_at + timedelta(seconds=30)
    assert s.status is RunStatus.CREATED


def test_a_claim_before_the_start_is_refused() -> None:
    b = RunBuilder()
    assert rejected(None, b.claim()) is RejectCode.RUN_NOT_STARTED


def test_a_second_claim_fences_the_first_even_while_its_lease_runs(
    builder: BuilderFactory,
) -> None:
    b = claimed_run(builder)
    before = folded(b)
    claim = b.claim("agent-b")
    assert before.lease_held_at(claim.occurred_at)
    after = applied(before, claim)
    assert (after.epoch, after.holder) == (2, "agent-b")


def test_a_claim_that_lost_the_race_is_fenced(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    s = folded(b)
    late = b.claim("agent-b", epoch=1)
    outcome = apply(s, late)
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.FENCED
    assert outcome.reason.startswith("fenced: run claimed by agent-a (epoch 1)")


def test_a_claim_restated_with_a_new_id_is_a_duplicate(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    s = folded(b)
    again = b.claim("agent-a", epoch=1)
    assert duplicate(s, again) is DuplicateWhy.ALREADY_REFLECTED


def test_a_claim_may_not_skip_epochs(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    s = folded(b)
    assert rejected(s, b.claim("agent-b", epoch=3)) is RejectCode.UNCLAIMED_EPOCH


def test_an_ended_run_cannot_be_claimed(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    b.complete()
    s = folded(b)
    assert rejected(s, b.claim("agent-b")) is RejectCode.RUN_ENDED


def test_a_claim_keeps_the_status_and_shows_in_the_history(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    b.step("collect", complete=False)
    s = folded(b)
    assert s.status is RunStatus.IN_PROGRESS
    outcome = apply(s, b.claim("agent-b"))
    assert isinstance(outcome, Applied)
    assert outcome.state.status is RunStatus.IN_PROGRESS
    change = outcome.change
    assert (change.event_type, change.epoch, change.holder) == ("RunClaimed", 2, "agent-b")
    assert (change.from_status, change.to_status) == (RunStatus.IN_PROGRESS, RunStatus.IN_PROGRESS)


# --- fencing ---------------------------------------------------------------------------


def test_an_event_of_an_older_epoch_is_fenced_and_changes_nothing(
    builder: BuilderFactory,
) -> None:
    b = claimed_run(builder)
    b.claim("agent-b")
    s = folded(b)
    stale = b.emit(StepStarted, step="collect", step_index=0, attempt=1, epoch=1)
    outcome = apply(s, stale)
    assert isinstance(outcome, Rejected)
    assert outcome.code is RejectCode.FENCED
    assert outcome.reason.startswith("fenced: run claimed by agent-b (epoch 2)")
    assert stale.event_id in outcome.reason
    assert fold(b.events) == s


def test_an_epoch_no_claim_started_is_refused(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    s = folded(b)
    ahead = b.emit(StepStarted, step="collect", step_index=0, attempt=1, epoch=2)
    assert rejected(s, ahead) is RejectCode.UNCLAIMED_EPOCH
    b2 = builder("never-claimed")
    s2 = folded(b2)
    assert rejected(s2, b2.emit(StepStarted, step="x", step_index=0, attempt=1, epoch=1)) is (
        RejectCode.UNCLAIMED_EPOCH
    )


def test_facts_from_a_fenced_writer_are_still_recorded(builder: BuilderFactory) -> None:
    """The call happened; dropping its id would let the next holder call again."""
    b = claimed_run(builder)
    b.step_index += 1
    b.emit(StepStarted, step="send", step_index=b.step_index, attempt=1)
    b.emit(ExternalActionIntended, step="send", idempotency_key="k", system="email")
    b.claim("agent-b")
    s = folded(b)
    recorded = b.emit(
        ExternalActionRecorded,
        step="send",
        idempotency_key="k",
        system="email",
        external_id="msg-1",
        epoch=1,
    )
    after = applied(s, recorded)
    action = after.external_action("k")
    assert action is not None and action.external_id == "msg-1"
    assert after.lease_until == s.lease_until  # a stale writer does not renew the lease
    model = b.emit(ModelCalled, model_request_id="req-1", model="m", epoch=1)
    assert applied(after, model).has_model_request("req-1")


def test_events_without_an_epoch_apply_on_a_claimed_run(builder: BuilderFactory) -> None:
    """People and timers hold no lease: an approval decided by a person is not fenced."""
    b = claimed_run(builder)
    b.step("collect")
    b.request_approval("collect", subject_hash="sha256:abc")
    s = folded(b)
    decision = b.emit(ApprovalGranted, by="manager", subject_hash="sha256:abc", epoch=None)
    assert decision.epoch is None
    after = applied(s, decision)
    assert after.status is RunStatus.IN_PROGRESS
    assert after.lease_until == s.lease_until


def test_a_redelivered_event_of_a_fenced_epoch_is_still_a_duplicate(
    builder: BuilderFactory,
) -> None:
    b = claimed_run(builder)
    b.step_index += 1
    started = b.emit(StepStarted, step="collect", step_index=b.step_index, attempt=1)
    b.claim("agent-b")
    s = folded(b)
    assert duplicate(s, started) is DuplicateWhy.EVENT_ID_SEEN


# --- expiry and renewal ----------------------------------------------------------------


def test_the_holders_events_renew_the_lease(builder: BuilderFactory) -> None:
    b = claimed_run(builder)
    b.tick = timedelta(seconds=20)
    s = folded(b)
    assert s.lease_until is not None
    started = b.emit(StepStarted, step="collect", step_index=0, attempt=1)
    renewed = applied(s, started)
    assert renewed.lease_until == started.occurred_at + timedelta(seconds=30)
    # An event whose own clock is behind never shortens the lease.
    earlier = started.occurred_at - timedelta(seconds=25)
    done = b.emit(StepCompleted, step="collect", attempt=1, at=earlier)
    assert applied(renewed, done).lease_until == renewed.lease_until


def test_lease_held_at() -> None:
    b = RunBuilder()
    b.start()
    claim = b.claim(lease_ms=1_000)
    s = fold(b.events)
    assert s is not None
    assert s.lease_held_at(claim.occurred_at + timedelta(milliseconds=999))
    assert not s.lease_held_at(claim.occurred_at + timedelta(seconds=1))
    assert not replace(s, holder=None).lease_held_at(claim.occurred_at)


# --- properties ------------------------------------------------------------------------


@st.composite
def contested_runs(draw: st.DrawFn) -> list[AgentEvent]:
    """A plausible run (junk included) with claims at random points and every event
    stamped with the current epoch, an older one (a fenced writer), a newer one, or none."""
    events = draw(plausible_runs())
    out: list[AgentEvent] = []
    epoch = 0
    for event in events:
        if not isinstance(event, RunStarted) and draw(st.integers(0, 4)) == 0:
            stale = epoch > 0 and draw(st.booleans()) and draw(st.booleans())
            claimed = epoch if stale else epoch + 1
            epoch = max(epoch, claimed)
            out.append(
                RunClaimed(
                    event_id=f"{event.event_id}-claim",
                    run_id=event.run_id,
                    occurred_at=event.occurred_at,
                    producer="p",
                    epoch=max(claimed, 1),
                    claimed_by=draw(st.sampled_from(["a", "b", "c"])),
                    lease_ms=draw(st.integers(1, 60_000)),
                )
            )
        if isinstance(event, RunStarted):
            out.append(event)
            continue
        stamp = draw(st.sampled_from(["current", "current", "older", "newer", "none"]))
        value = {
            "current": epoch or None,
            "older": epoch - 1 if epoch > 1 else None,
            "newer": epoch + 1,
            "none": None,
        }[stamp]
        out.append(event.model_copy(update={"epoch": value}))
    return out


def _epoch(s: RunState | None) -> int:
    return 0 if s is None or s.epoch is None else s.epoch


@given(contested_runs())
@settings(max_examples=300)
def test_epochs_never_go_backwards_and_move_only_by_a_claim(events: list[AgentEvent]) -> None:
    state: RunState | None = None
    for event in events:
        outcome = apply(state, event)
        if isinstance(outcome, Applied):
            after = outcome.state
            if isinstance(event, RunClaimed):
                assert _epoch(after) == _epoch(state) + 1
                assert after.holder == event.claimed_by
            else:
                assert (after.epoch, after.holder) == (
                    (None, None) if state is None else (state.epoch, state.holder)
                )
            assert outcome.change.epoch == after.epoch
            state = after
        elif isinstance(outcome, Duplicate):
            assert outcome.state is state


@given(contested_runs())
@settings(max_examples=300)
def test_a_fenced_event_changes_nothing(events: list[AgentEvent]) -> None:
    state: RunState | None = None
    kept: list[AgentEvent] = []
    for event in events:
        outcome = apply(state, event)
        older = event.epoch is not None and event.epoch < _epoch(state)
        facts = (ExternalActionRecorded, ModelCalled)
        if isinstance(outcome, Rejected) and outcome.code is RejectCode.FENCED:
            assert older or isinstance(event, RunClaimed)
            assert outcome.reason.startswith(
                f"fenced: run claimed by {state.holder if state else None} (epoch {_epoch(state)})"
            )
            continue
        if older and not isinstance(event, facts) and not isinstance(outcome, Duplicate):
            raise AssertionError(f"{event!r} of an older epoch was not fenced: {outcome!r}")
        kept.append(event)
        if isinstance(outcome, Applied):
            state = outcome.state
    # Without the fenced events, the run ends the same: they left no trace.
    assert fold(kept) == state


@given(plausible_runs())
def test_runs_from_before_the_lease_fold_as_before(events: list[AgentEvent]) -> None:
    assert all(e.epoch is None for e in events)
    state = fold(events)
    if state is not None:
        assert (state.epoch, state.holder, state.lease_until) == (None, None, None)


@given(plausible_runs(junk=False))
@settings(max_examples=100)
def test_a_claimed_run_driven_by_its_holder_ends_as_an_unclaimed_one(
    events: list[AgentEvent],
) -> None:
    """The lease adds its fields and the claim's line, and decides nothing else."""
    start, rest = events[0], events[1:]
    assert isinstance(start, RunStarted)
    claim = RunClaimed(
        event_id="claim-1",
        run_id=start.run_id,
        occurred_at=start.occurred_at,
        producer="p",
        epoch=1,
        claimed_by="a",
        lease_ms=1_000,
    )
    stamped = [e.model_copy(update={"epoch": 1}) for e in rest]
    leased = fold([start, claim, *stamped])
    legacy = fold(events)
    assert leased is not None and legacy is not None
    assert (leased.epoch, leased.holder) == (1, "a")
    assert (
        replace(
            leased,
            epoch=None,
            holder=None,
            lease_ms=None,
            lease_until=None,
            version=leased.version - 1,
            recent_event_digests=legacy.recent_event_digests,
        )
        == legacy
    )
