"""What deciding an approval reads, writes and returns, field by field.

test_approvals.py checks the rules (once, for the subject shown, only while pending); these
check the facts behind them. Each was found by ``make mutation``: a one-token change to
``agents/approvals.py`` that no test noticed.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from runstate.agents import (
    DurableRun,
    InMemoryRuns,
    ManualClock,
    approve,
    reject,
    subject_hash,
)
from runstate.agents.approvals import (
    canonical_json,
    decision_of,
    pending_approval,
)
from runstate.errors import ApprovalError, RunSuspended
from runstate.identity import Principal
from runstate.runs.state import ApprovalOutcome
from runstate.schemas.events import AgentEvent, ApprovalGranted, ApproverKind
from runstate.streams.producer import Delivery
from tests.agents.recording import PositionRecordingReader

#: A member of the group the approvals of these tests ask.
ANA = Principal("ana", groups=frozenset({"risk-team"}))
RUN = "run-1"
SUBJECT = {"company": "Acme", "limit": 50000}


@pytest.fixture
def runs() -> InMemoryRuns:
    return InMemoryRuns()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def waiting(runs: InMemoryRuns, clock: ManualClock) -> DurableRun:
    run = DurableRun.start(
        runs, runs, run_id=RUN, agent="a", input="{}", prompt_version="p", owner="o",
        source="test", clock=clock,
    )  # fmt: skip
    with pytest.raises(RunSuspended):
        run.await_approval(
            "approve",
            approver="risk-team",
            approver_kind=ApproverKind.GROUP,
            subject=SUBJECT,
            due=timedelta(hours=1),
        )
    return run


class DecidedFirst:
    """A sink where another person's grant lands just before ours (the race both saw)."""

    def __init__(self, runs: InMemoryRuns) -> None:
        self.runs = runs

    def new_event(self, cls: type[AgentEvent], run_id: str, **fields: object) -> AgentEvent:
        return self.runs.new_event(cls, run_id, **fields)

    def emit(self, event: AgentEvent, *, timeout_s: float = 60.0) -> Delivery:
        first = self.runs.new_event(
            ApprovalGranted,
            event.run_id,
            by="other",
            subject_hash=subject_hash(SUBJECT),
            by_groups=("risk-team",),
        )
        self.runs.emit(first)
        return self.runs.emit(event)


def test_a_pending_approval_says_who_decides_what_until_when(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    assert pending_approval(None) is None
    waiting(runs, clock)
    pending = pending_approval(runs.read(RUN))
    assert pending is not None
    assert (pending.run_id, pending.step, pending.approver, pending.approver_kind) == (
        RUN,
        "approve",
        "risk-team",
        ApproverKind.GROUP,
    )
    assert (pending.subject, pending.subject_hash) == (
        canonical_json(SUBJECT),
        subject_hash(SUBJECT),
    )
    assert (pending.requested_at, pending.due_at) == (clock.now(), clock.now() + timedelta(hours=1))
    assert decision_of(runs.read(RUN), "approve") is None  # type: ignore[arg-type]


def test_a_decision_reads_at_the_latest_position_and_after_its_own_event(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    waiting(runs, clock)
    before = runs.latest_position(RUN)
    reader = PositionRecordingReader(runs)
    receipt = approve(runs, reader, RUN, by=ANA, comment="fine")  # type: ignore[arg-type]
    assert reader.afters == [before, receipt.delivery]
    assert receipt.delivery == runs.latest_position(RUN)
    assert (receipt.run_id, receipt.outcome, receipt.by, receipt.subject_hash) == (
        RUN,
        ApprovalOutcome.GRANTED,
        "ana",
        subject_hash(SUBJECT),
    )
    decision = decision_of(receipt.state, "approve")
    assert decision is not None
    assert (decision.step, decision.decided_by, decision.comment) == ("approve", "ana", "fine")
    assert decision.decided_at is not None


def test_a_decision_the_processor_refused_is_an_error_not_a_receipt(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    waiting(runs, clock)
    with pytest.raises(ApprovalError, match=r"refused to reject .* already granted by other"):
        reject(DecidedFirst(runs), runs, RUN, by=ANA, reason="no")  # type: ignore[arg-type]
    assert [r.event.event_type for r in runs.rejected] == ["ApprovalRejected"]


def test_a_rejection_of_a_subject_that_changed_is_refused(
    runs: InMemoryRuns, clock: ManualClock
) -> None:
    waiting(runs, clock)
    with pytest.raises(ApprovalError, match="subject changed"):
        reject(runs, runs, RUN, by=ANA, reason="no", expected_subject_hash="sha256:old")
    receipt = reject(runs, runs, RUN, by=ANA, reason="no")
    assert receipt.outcome is ApprovalOutcome.REJECTED


@dataclasses.dataclass
class Limit:
    company: str
    amount: int


def test_dataclasses_and_sets_have_a_canonical_form_classes_do_not() -> None:
    assert canonical_json(Limit("Acme", 5)) == canonical_json({"amount": 5, "company": "Acme"})
    assert canonical_json({"tags": {"b", "a"}}) == canonical_json({"tags": ["a", "b"]})
    with pytest.raises(TypeError, match="type has no canonical JSON form"):
        canonical_json(Limit)
    with pytest.raises(TypeError, match="object has no canonical JSON form"):
        canonical_json(object())
