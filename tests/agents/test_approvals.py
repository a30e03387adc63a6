"""Deciding approvals: once, for the subject shown, only when one is pending (in process)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runstate.agents import DurableRun, InMemoryRuns, approve, reject, subject_hash
from runstate.errors import ApprovalError, RunSuspended
from runstate.runs.reducer import RejectCode
from runstate.runs.state import ApprovalOutcome, RunStatus
from runstate.schemas.events import ApprovalGranted

SUBJECT = {"company": "Acme", "limit": 50000}


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


def waiting_run(runs: InMemoryRuns, run_id: str = "run-1") -> DurableRun:
    run = DurableRun.start(
        runs,
        runs,
        run_id=run_id,
        agent="a",
        input="{}",
        prompt_version="p",
        owner="o",
        source="test",
    )
    with pytest.raises(RunSuspended):
        run.await_approval("approve", approver="manager", subject=SUBJECT, due=timedelta(hours=1))
    return run


def test_approve_binds_the_decision_to_the_pending_subject(runs: InMemoryRuns) -> None:
    waiting_run(runs)
    receipt = approve(runs, runs, "run-1", by="manager", comment="fine")
    assert receipt.subject_hash == subject_hash(SUBJECT)
    assert receipt.state.status is RunStatus.IN_PROGRESS
    assert receipt.state.approval is not None
    assert (receipt.state.approval.outcome, receipt.state.approval.comment) == (
        ApprovalOutcome.GRANTED,
        "fine",
    )


def test_deciding_twice_is_refused_and_emits_nothing(runs: InMemoryRuns) -> None:
    waiting_run(runs)
    approve(runs, runs, "run-1", by="manager")
    count = len(runs.events)
    with pytest.raises(ApprovalError, match="already granted by manager"):
        approve(runs, runs, "run-1", by="manager")
    with pytest.raises(ApprovalError, match="already granted"):
        reject(runs, runs, "run-1", by="other", reason="too late")
    assert len(runs.events) == count


def test_deciding_a_run_that_does_not_wait_is_refused(runs: InMemoryRuns) -> None:
    DurableRun.start(
        runs,
        runs,
        run_id="run-2",
        agent="a",
        input="{}",
        prompt_version="p",
        owner="o",
        source="test",
    )
    with pytest.raises(ApprovalError, match="never asked for an approval"):
        approve(runs, runs, "run-2", by="manager")
    with pytest.raises(ApprovalError, match="no such run"):
        approve(runs, runs, "nope", by="manager")
    assert [e.event_type for e in runs.events] == ["RunStarted", "RunClaimed"]


def test_a_stale_subject_is_refused_by_the_sdk(runs: InMemoryRuns) -> None:
    waiting_run(runs)
    count = len(runs.events)
    with pytest.raises(ApprovalError, match="subject changed"):
        approve(runs, runs, "run-1", by="manager", expected_subject_hash=subject_hash({"x": 1}))
    assert len(runs.events) == count


def test_a_stale_subject_is_refused_by_the_reducer_too(runs: InMemoryRuns) -> None:
    waiting_run(runs)
    stale = runs.new_event(ApprovalGranted, "run-1", by="manager", subject_hash="sha256:old")
    runs.emit(stale)
    assert runs.rejected[-1].rejection.code is RejectCode.STALE_SUBJECT
    state = runs.read("run-1")
    assert state is not None and state.status is RunStatus.WAITING_APPROVAL


def test_reject_keeps_the_reason(runs: InMemoryRuns) -> None:
    waiting_run(runs)
    receipt = reject(runs, runs, "run-1", by="manager", reason="limit too high")
    assert receipt.state.approval is not None
    assert receipt.state.approval.outcome is ApprovalOutcome.REJECTED
    assert receipt.state.approval.comment == "limit too high"
