"""One test per transition and per rejection of the reducer."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from runstate.runs.reducer import (
    Applied,
    Duplicate,
    DuplicateWhy,
    RejectCode,
    apply,
    fold,
)
from runstate.runs.state import (
    RECENT_EVENT_IDS_LIMIT,
    TERMINAL_STATUSES,
    TRANSITIONS,
    RunStatus,
    StepPhase,
    event_digest,
)
from runstate.schemas.events import (
    EVENT_TYPES,
    ApprovalGranted,
    FailureReason,
    RetryScheduled,
    RunCancelled,
    RunStarted,
    StepCompleted,
    StepRetryRequested,
    StepStarted,
)
from tests.factories import T0, RunBuilder, make_run
from tests.runs.conftest import (
    BuilderFactory,
    applied,
    duplicate,
    folded,
    rejected,
    running,
)

# --- the table -------------------------------------------------------------------------


def test_every_event_but_run_started_has_a_row_and_ended_runs_stay_ended() -> None:
    """Only an operator moves an ended run: a failed one back to work, or closed."""
    assert set(TRANSITIONS) == set(EVENT_TYPES.values()) - {RunStarted}
    operator_moves = {
        (StepRetryRequested, RunStatus.FAILED, RunStatus.IN_PROGRESS),
        (RunCancelled, RunStatus.FAILED, RunStatus.CANCELLED),
    }
    moves = set()
    for event_type, row in TRANSITIONS.items():
        for before, after in row.items():
            if before in TERMINAL_STATUSES and after is not before:
                moves.add((event_type, before, after))
    assert moves == operator_moves


# --- starting --------------------------------------------------------------------------


def test_run_started_creates_the_run_at_version_1() -> None:
    started = make_run(end="open")[0]
    outcome = apply(None, started, offset=7)
    assert isinstance(outcome, Applied)
    s = outcome.state
    assert (s.status, s.version, s.last_offset, s.created_at) == (
        RunStatus.CREATED,
        1,
        7,
        started.occurred_at,
    )
    assert isinstance(started, RunStarted)
    assert (s.input, s.prompt_version, s.owner) == (started.input, "p-7", "team-procurement")
    assert s.saw_event(started.event_id)
    assert outcome.change.from_status is None
    assert outcome.change.to_status is RunStatus.CREATED


def test_any_event_before_run_started_is_rejected() -> None:
    for event in make_run()[1:]:
        assert rejected(None, event) is RejectCode.RUN_NOT_STARTED


def test_a_second_run_started(builder: BuilderFactory) -> None:
    b = builder()
    s = folded(b)
    first = b.events[0]
    assert isinstance(first, RunStarted)
    same_start = first.model_copy(update={"event_id": "other-id"})
    assert duplicate(s, same_start) is DuplicateWhy.ALREADY_REFLECTED
    assert rejected(s, b.start()) is RejectCode.RUN_ALREADY_STARTED


def test_an_event_of_another_run_is_rejected(builder: BuilderFactory) -> None:
    s = folded(builder())
    assert rejected(s, RunBuilder("run-2").model_call()) is RejectCode.WRONG_RUN


# --- duplicates by offset and id -------------------------------------------------------


def test_offsets_at_or_below_the_last_one_are_duplicates(builder: BuilderFactory) -> None:
    b = builder()
    s = fold([(10, b.events[0])])
    assert s is not None and s.last_offset == 10
    call = b.model_call()
    assert isinstance(apply(s, call, offset=10), Duplicate)
    assert isinstance(apply(s, call, offset=9), Duplicate)
    assert isinstance(apply(s, call, offset=11), Applied)
    assert applied(s, call).last_offset == 10  # no offset given: the old one stays


def test_a_seen_event_id_is_a_duplicate_and_the_memory_is_bounded(
    builder: BuilderFactory,
) -> None:
    b = builder()
    for _ in range(RECENT_EVENT_IDS_LIMIT + 5):
        b.model_call()
    s = folded(b)
    assert len(s.recent_event_digests) == RECENT_EVENT_IDS_LIMIT
    assert s.recent_event_digests[-1] == event_digest(b.events[-1].event_id)
    assert duplicate(s, b.events[-1]) is DuplicateWhy.EVENT_ID_SEEN
    assert not s.saw_event(b.events[0].event_id)
    # Forgotten ids are still caught by what the state holds.
    assert duplicate(s, b.events[1]) is DuplicateWhy.ALREADY_REFLECTED


# --- steps -----------------------------------------------------------------------------


def test_step_started_moves_the_run_in_progress(builder: BuilderFactory) -> None:
    b = running(builder)
    s = folded(b)
    assert (s.status, s.current_step, s.step_index, s.step_attempt, s.step_phase) == (
        RunStatus.IN_PROGRESS,
        "collect",
        0,
        1,
        StepPhase.RUNNING,
    )
    assert s.last_attempt_at == b.events[-1].occurred_at
    assert duplicate(s, b.events[-1].model_copy(update={"event_id": "again"})) is (
        DuplicateWhy.ALREADY_REFLECTED
    )


def test_step_completed_keeps_the_result(builder: BuilderFactory) -> None:
    b = running(builder)
    done = b.emit(StepCompleted, step="collect", attempt=1, output_ref="s3://x")
    s = folded(b)
    assert s.step_phase is StepPhase.COMPLETED
    assert [(c.step, c.attempt, c.output_ref, c.completed_at) for c in s.completed_steps] == [
        ("collect", 1, "s3://x", done.occurred_at)
    ]
    assert duplicate(s, done.model_copy(update={"event_id": "x"})) is (
        DuplicateWhy.ALREADY_REFLECTED
    )


def test_step_completed_for_another_step_or_attempt_is_rejected(
    builder: BuilderFactory,
) -> None:
    b = running(builder)
    s = folded(b)
    assert rejected(s, b.emit(StepCompleted, step="other", attempt=1)) is (
        RejectCode.STEP_NOT_STARTED
    )
    assert rejected(s, b.emit(StepCompleted, step="collect", attempt=2)) is (
        RejectCode.WRONG_ATTEMPT
    )
    assert rejected(folded(builder()), b.emit(StepCompleted, step="collect", attempt=1)) is (
        RejectCode.ILLEGAL_TRANSITION
    )


def test_a_failed_attempt_cannot_complete(builder: BuilderFactory) -> None:
    b = running(builder)
    b.fail_step("collect")
    s = folded(b)
    assert rejected(s, b.emit(StepCompleted, step="collect", attempt=1)) is (
        RejectCode.STEP_NOT_RUNNING
    )


def test_step_failed_keeps_reason_and_retry_is_scheduled_then_started(
    builder: BuilderFactory,
) -> None:
    b = running(builder)
    b.emit(StepStarted, step="collect", step_index=0, attempt=1)  # re-sent: a no-op
    b.fail_step("collect", reason=FailureReason.EMPTY_RESPONSE)
    s = folded(b)
    assert (s.step_phase, s.last_error_reason, s.last_error_message) == (
        StepPhase.FAILED,
        FailureReason.EMPTY_RESPONSE,
        "failed",
    )
    not_before = b.clock + timedelta(seconds=30)
    b.emit(RetryScheduled, step="collect", attempt=2, not_before=not_before)
    s = folded(b)
    assert (s.step_phase, s.retry_count, s.retry_not_before) == (
        StepPhase.RETRY_SCHEDULED,
        1,
        not_before,
    )
    b.emit(StepStarted, step="collect", step_index=0, attempt=2)
    s = folded(b)
    assert (s.step_attempt, s.step_phase, s.retry_not_before) == (2, StepPhase.RUNNING, None)


def test_retry_needs_a_failed_step_and_the_next_attempt(builder: BuilderFactory) -> None:
    b = running(builder)
    s = folded(b)
    retry = b.emit(RetryScheduled, step="collect", attempt=2, not_before=b.clock)
    assert rejected(s, retry) is RejectCode.STEP_NOT_FAILED
    b.fail_step("collect")
    s = folded(b)
    assert rejected(s, b.emit(RetryScheduled, step="collect", attempt=3, not_before=b.clock)) is (
        RejectCode.WRONG_ATTEMPT
    )
    assert rejected(s, b.emit(RetryScheduled, step="other", attempt=2, not_before=b.clock)) is (
        RejectCode.STEP_NOT_FAILED
    )


def test_step_order_and_attempt_rules(builder: BuilderFactory) -> None:
    b = running(builder)
    s = folded(b)
    assert rejected(s, b.emit(StepStarted, step="next", step_index=1, attempt=1)) is (
        RejectCode.STEP_IN_PROGRESS
    )
    assert rejected(s, b.emit(StepStarted, step="collect", step_index=0, attempt=3)) is (
        RejectCode.WRONG_ATTEMPT
    )
    # A worker that crashed mid-attempt starts the next attempt of the same step.
    assert (
        applied(s, b.emit(StepStarted, step="collect", step_index=0, attempt=2)).step_attempt == 2
    )
    b.emit(StepCompleted, step="collect", attempt=2)
    s = folded(b)
    assert rejected(s, b.emit(StepStarted, step="collect", step_index=0, attempt=3)) is (
        RejectCode.STEP_ALREADY_COMPLETED
    )
    assert rejected(s, b.emit(StepStarted, step="next", step_index=0, attempt=1)) is (
        RejectCode.STEP_OUT_OF_ORDER
    )
    assert rejected(s, b.emit(StepStarted, step="next", step_index=1, attempt=2)) is (
        RejectCode.WRONG_ATTEMPT
    )
    assert applied(s, b.emit(StepStarted, step="collect", step_index=1, attempt=1)).step_index == 1


def test_a_new_step_may_follow_a_failed_one(builder: BuilderFactory) -> None:
    b = running(builder)
    b.fail_step("collect")
    s = applied(folded(b), b.emit(StepStarted, step="fallback", step_index=1, attempt=1))
    assert (s.current_step, s.step_phase) == ("fallback", StepPhase.RUNNING)


# --- model calls -----------------------------------------------------------------------


def test_model_calls_are_all_kept_even_after_the_end(builder: BuilderFactory) -> None:
    b = builder()
    b.model_call()
    b.complete()
    late = b.model_call("summary")
    s = folded(b)
    assert s.status is RunStatus.COMPLETED
    assert [(m.request_id, m.step) for m in s.model_calls][-1] == (late.model_request_id, "summary")
    assert s.has_model_request(late.model_request_id)
    assert duplicate(s, late.model_copy(update={"event_id": "again"})) is (
        DuplicateWhy.ALREADY_REFLECTED
    )


# --- endings ---------------------------------------------------------------------------


def test_run_endings(builder: BuilderFactory) -> None:
    b = builder()
    s = folded(b)
    completed = applied(s, b.complete())
    assert (completed.status, completed.output_ref) == (RunStatus.COMPLETED, "s3://out/final")
    failed = applied(s, b.fail(needs_attention=True))
    assert (failed.status, failed.last_error_reason, failed.needs_attention) == (
        RunStatus.FAILED,
        FailureReason.TIMEOUT,
        True,
    )
    cancelled = applied(s, b.cancel())
    assert (cancelled.status, cancelled.cancelled_by, cancelled.cancel_reason) == (
        RunStatus.CANCELLED,
        "operator",
        "customer withdrew",
    )


def test_after_the_end(builder: BuilderFactory) -> None:
    b = builder()
    b.complete()
    s = folded(b)
    assert duplicate(s, b.complete()) is DuplicateWhy.ALREADY_REFLECTED
    assert rejected(s, b.fail()) is RejectCode.RUN_ENDED
    assert rejected(s, b.cancel()) is RejectCode.RUN_ENDED
    assert rejected(s, b.emit(StepStarted, step="x", step_index=0, attempt=1)) is (
        RejectCode.RUN_ENDED
    )


# --- the change record and bookkeeping -------------------------------------------------


def test_every_applied_event_emits_its_change() -> None:
    events = make_run(with_approval=True, failures=1, with_action=True)
    state = None
    for i, event in enumerate(events):
        outcome = apply(state, event)
        assert isinstance(outcome, Applied), (i, event, outcome)
        c = outcome.change
        assert (c.run_id, c.version, c.event_id, c.event_type, c.occurred_at) == (
            event.run_id,
            i + 1,
            event.event_id,
            event.event_type,
            event.occurred_at,
        )
        assert c.from_status is (None if state is None else state.status)
        assert c.to_status is outcome.state.status
        named = event.step if "step" in type(event).model_fields else None  # type: ignore[attr-defined]
        assert c.step == (named or outcome.state.current_step)
        state = outcome.state
    assert state is not None and state.status is RunStatus.COMPLETED


def test_updated_at_never_moves_back(builder: BuilderFactory) -> None:
    b = builder()
    ahead = b.model_call()
    s = folded(b)
    behind = b.emit(type(ahead), at=T0 - timedelta(hours=1), model_request_id="r-2", model="m")
    assert applied(s, behind).updated_at == ahead.occurred_at


# --- fold ------------------------------------------------------------------------------


def test_fold_until_a_time_a_position_or_an_offset() -> None:
    events = make_run(end="open", steps=("a", "b"))
    cut = events[3]
    by_time = fold(events, until=cut.occurred_at)
    assert by_time is not None and by_time.version == 4
    by_position = fold(events, until=3)
    assert by_time == by_position
    by_offset = fold([(100 + i, e) for i, e in enumerate(events)], until=103)
    assert by_offset is not None
    assert replace(by_offset, last_offset=None) == by_position
    assert fold(events, until=-1) is None


def test_fold_continues_from_a_snapshot() -> None:
    events = make_run(with_approval=True)
    snapshot = fold(events[:5])
    assert fold(events[5:], start=snapshot) == fold(events)


def test_fold_skips_rejected_events() -> None:
    events = make_run(end="open")
    stray = RunBuilder(seed=99).emit(ApprovalGranted, by="x", subject_hash="h")
    assert fold([events[0], stray, *events[1:]]) == fold(events)
