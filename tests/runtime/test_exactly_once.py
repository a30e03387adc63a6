"""The runtime on a real broker: every change exactly once, final states equal to the fold."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from runstate.runs.state import ApprovalOutcome
from runstate.runtime.app import build_worker
from runstate.streams.producer import HEADER_EVENT_TYPE
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.runtime.support import (
    BAD_RECORDS,
    Verdict,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_events,
    produce_raw,
    read,
    run_in_thread,
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.mark.parametrize("exactly_once", [True, False], ids=["transactions", "at-least-once"])
def test_many_runs_each_change_once_and_states_equal_the_fold(
    kafka_bootstrap: str, unique_name: Callable[[str], str], exactly_once: bool
) -> None:
    names = TopicNames(unique_name("rt"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(60, prefix="run", seed=1)
    events = list(interleave(runs, seed=1))
    produce_events(kafka_bootstrap, names, events[: len(events) // 2])
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, exactly_once=exactly_once)
    worker = build_worker(config)
    thread, failure = run_in_thread(worker)
    try:
        produce_events(kafka_bootstrap, names, events[len(events) // 2 :])
        verdict = assert_eventually(
            lambda: (
                (v := check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS)))
                and not failure
                and v.complete
                and not v.problems
                and v
            ),
            timeout_s=90,
            interval_s=1.0,
            what="every change once, final states equal to the fold",
        )
        assert verdict.expected.events == len(events)
    finally:
        worker.stop()
        thread.join(60)
    assert not failure, failure
    assert not thread.is_alive()
    final = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert final.problems == []
    assert set(final.change_counts.values()) == {1}


def test_overdue_approvals_are_expired_by_the_owner_once(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rte"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    waiting = []
    for i in range(8):
        b = RunBuilder(f"wait-{i}", seed=i)  # its clock is in 2025: long overdue
        b.start()
        b.step("collect")
        b.request_approval("collect")
        waiting.append(b.events)
    produce_events(kafka_bootstrap, names, [e for run in waiting for e in run])
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, deadline_interval_s=0.5)
    worker = build_worker(config)
    thread = threading.Thread(target=worker.run, name="runtime-worker", daemon=True)
    thread.start()
    try:

        def expired() -> Verdict:
            v = check_outputs(kafka_bootstrap, names)
            assert v.complete and not v.problems, v.problems
            outcomes = {
                s.approval.outcome if s.approval else None for s in v.expected.states.values()
            }
            assert outcomes == {ApprovalOutcome.EXPIRED}, outcomes
            return v

        verdict = assert_eventually(expired, timeout_s=60, what="every approval expired")
    finally:
        worker.stop()
        thread.join(60)
    made = [
        r
        for r in read(kafka_bootstrap, names.events)
        if r.header(HEADER_EVENT_TYPE) == b"ApprovalExpired"
    ]
    assert len(made) == len(waiting)  # once each: nothing re-sent within the resend period
    assert len(verdict.expected.states) == len(waiting)
