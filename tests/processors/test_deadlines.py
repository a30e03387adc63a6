"""Approval deadlines: one ApprovalExpired per overdue approval, none for decided ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runstate.runs.deadlines import (
    Deadline,
    DeadlineIndex,
    expiry_event,
    expiry_event_id,
)
from runstate.runs.reducer import Applied, apply, fold
from runstate.schemas.events import ApprovalExpired, ApprovalGranted
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.processors.processor_support import (
    Deployment,
    DeploymentFactory,
    assert_stays,
)


def _waiting(run_id: str, due_in: timedelta) -> RunBuilder:
    b = RunBuilder(run_id, clock=datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5))
    b.start()
    b.step("collect")
    b.request_approval("collect", due_in=due_in)
    return b


def test_expiry_event_id_is_the_same_for_every_producer() -> None:
    due = datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert expiry_event_id("r", "sha256:a", due) == expiry_event_id("r", "sha256:a", due)
    assert expiry_event_id("r", "sha256:a", due) != expiry_event_id("r", "sha256:b", due)


def test_index_finds_due_approvals_of_owned_partitions_once_per_resend_period() -> None:
    b = _waiting("run-1", timedelta(seconds=-1))
    state = fold(b.events)
    assert state is not None
    index = DeadlineIndex(resend_s=30)
    index.observe(3, state)
    now = datetime.now(UTC)
    assert index.due(now, owned={1}, clock=0) == []
    [due] = index.due(now, owned={3}, clock=0)
    index.mark_sent(due, clock=0)
    assert index.due(now, owned={3}, clock=10) == []
    assert index.due(now, owned={3}, clock=31) == [due]
    expired = apply(state, expiry_event(due, now=now, producer="t"))
    assert isinstance(expired, Applied)
    index.observe(3, expired.state)
    assert len(index) == 0


def test_expiry_never_precedes_the_due_time() -> None:
    due = datetime(2030, 1, 1, tzinfo=UTC)
    event = expiry_event(
        Deadline("r", 0, "h", due), now=datetime(2029, 1, 1, tzinfo=UTC), producer="t"
    )
    assert event.occurred_at == due


@pytest.fixture
def deployment(deployment_factory: DeploymentFactory) -> Deployment:
    return deployment_factory("deadline", 2)


@pytest.mark.integration
def test_overdue_approval_gets_exactly_one_expiry(deployment: Deployment) -> None:
    d = deployment
    w = d.worker("w1", deadline_interval_s=0.5).start()
    w.wait_ready()
    late = _waiting("run-late", timedelta(seconds=8))
    decided = _waiting("run-decided", timedelta(seconds=8))
    decided.emit(ApprovalGranted, by="alice", subject_hash="sha256:abc")
    with d.producer() as p:
        for e in late.events + decided.events:
            p.emit(e)

    def expired() -> bool:
        status, body = w.get("/runs/run-late")
        assert status == 200, body
        assert (body.get("approval") or {}).get("outcome") == "expired", body.get("approval")
        return True

    assert_eventually(expired, timeout_s=30, what="approval expired")

    def one_expiry() -> None:
        history = d.events_by_run()
        kinds = [type(e).__name__ for _, e in history["run-late"]]
        assert kinds.count("ApprovalExpired") == 1, kinds
        assert not any(isinstance(e, ApprovalExpired) for _, e in history["run-decided"])

    assert_stays(one_expiry, for_s=3)
    _, body = w.get("/runs/run-late")
    assert (body["status"], body["version"]) == ("in_progress", len(late.events) + 1)
