"""Scenario 9: producers whose clocks are an hour ahead or behind.

The log's order (offsets) decides, never ``occurred_at``: a step completed by a producer
whose clock is behind still completes the step a fast-clocked producer started; an approval
expires at its ``due_at`` by the processor's clock whatever the requester's clock said; an
expiry applied first wins over a late grant stamped earlier."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runstate.schemas.events import AgentEvent, ApprovalGranted, StepCompleted, StepStarted
from runstate.streams.producer import EventProducer
from tests.factories import RunBuilder
from tests.faults.conftest import DeploymentFactory
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually

HOUR = timedelta(hours=1)


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_clock_skew_does_not_reorder_or_fool_expiry(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory, scenario: ScenarioResult
) -> None:
    scenario.scenario, scenario.title = "9", "producer clock skew (+/- 1 h)"
    scenario.injections = (
        "occurred_at +1 h and -1 h on alternating producers within the same runs; approvals"
        " requested from skewed clocks with short and long due times; late grants"
    )
    d = deployment_factory(kafka_bootstrap, partitions=2)
    w = d.worker("w1").start()
    w.wait_ready()
    now = datetime.now(UTC)
    checks: dict[str, str] = {}
    acked: list[str] = []
    with d.producer("ahead") as ahead, d.producer("behind") as behind:

        def send(p: EventProducer, events: Sequence[AgentEvent]) -> None:
            for e in events:
                p.emit(e)
                acked.append(e.event_id)

        # step started by a clock 1 h ahead, completed by one 1 h behind
        order = RunBuilder("skew-order", clock=now + HOUR)
        send(ahead, [order.start(), order.emit(StepStarted, step="a", step_index=0, attempt=1)])
        send(behind, [order.emit(StepCompleted, at=now - HOUR, step="a", attempt=1)])
        # approvals: due soon / due late, requested from clocks ahead and behind
        runs = {}
        for name, skew, due_in in (
            ("skew-ahead-due-soon", HOUR, timedelta(seconds=3)),
            ("skew-behind-due-soon", -HOUR, timedelta(seconds=3)),
            ("skew-ahead-due-late", HOUR, timedelta(minutes=20)),
            ("skew-behind-due-late", -HOUR, timedelta(minutes=20)),
        ):
            b = RunBuilder(name, clock=now + skew)
            b.start()
            b.step("collect")
            req = b.request_approval("collect")
            # the requester stamps occurred_at from its own clock; due_at is absolute
            req = req.model_copy(update={"due_at": datetime.now(UTC) + due_in})
            b.events[-1] = req
            send(ahead if skew > timedelta(0) else behind, b.events)
            runs[name] = b

    def state(run_id: str) -> dict[str, Any]:
        status, body = w.get(f"/runs/{run_id}")
        assert status == 200, body
        return body

    def soon_expired() -> bool:
        for name in ("skew-ahead-due-soon", "skew-behind-due-soon"):
            s = state(name)
            assert s["approval"] and s["approval"]["outcome"] == "expired", s["approval"]
        return True

    began = time.monotonic()
    assert_eventually(soon_expired, timeout_s=60, what="short approvals expired")
    checks["due in 3 s, requester 1 h ahead/behind"] = (
        f"expired {time.monotonic() - began:.1f} s after the wait began"
    )
    for name in ("skew-ahead-due-late", "skew-behind-due-late"):
        s = state(name)
        assert s["status"] == "waiting_approval", s["status"]
        assert s["approval"]["outcome"] == "pending", s["approval"]
    checks["due in 20 min, requester 1 h ahead/behind"] = "still pending (not expired early)"
    # a grant stamped before the due time, sent after the expiry was applied
    late = runs["skew-behind-due-soon"]
    grant = late.emit(
        ApprovalGranted, at=now - 2 * HOUR, by="alice", subject_hash="sha256:abc", comment="late"
    )
    with d.producer("behind-2") as p:
        where = p.emit(grant)
        acked.append(grant.event_id)
    status, s = w.get(
        "/runs/skew-behind-due-soon",
        min_partition=where.partition,
        min_offset=where.offset,
        timeout=20,
    )
    assert status == 200, s
    assert s["approval"]["outcome"] == "expired", s["approval"]
    checks["grant stamped 2 h earlier, arriving after the expiry"] = "rejected; stays expired"
    o = state("skew-order")
    assert [c["step"] for c in o["completed_steps"]] == ["a"], o
    checks["start +1 h, complete -1 h"] = "completed in log order"
    verdict, _ = converge(Oracle(d.bootstrap, d.names), timeout_s=60, acked=acked, query=w)
    scenario.verdict(verdict)
    scenario.figures["checks"] = checks
    scenario.figures["retention"] = (
        "not exercised here: the archiver/retention trim by offsets and the archived"
        " watermark, not by occurred_at (see the prose)"
    )
    assert verdict.clean, verdict.summary()
