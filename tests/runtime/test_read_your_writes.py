"""Reading at the end of a partition, as a fresh process does (``latest_position``), answers
also when the partition ends with a transaction marker: the worker's own ApprovalExpired
commits with one, an offset that no record's ``offset + 1`` reaches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runstate.agents import DurableRun, HttpRunStateReader
from runstate.runs.state import ApprovalOutcome, RunStatus
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.workers import Deployment

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Deployment]:
    d = Deployment(kafka_bootstrap, unique_name("ryw"), 1, tmp_path)
    d.ensure_topics()
    yield d
    d.close()


def test_a_read_at_the_partitions_end_answers_after_an_expiry(deployment: Deployment) -> None:
    d = deployment
    w = d.worker("w1", deadline_interval_s=0.5).start()
    w.wait_ready(partitions=1)
    b = RunBuilder("run-late", clock=datetime.now(UTC).replace(microsecond=0) - timedelta(10))
    b.start()
    b.step("collect")
    b.request_approval("collect", due_in=timedelta(seconds=1))  # long past due
    with d.producer() as p:
        for e in b.events:
            p.emit(e)
    reader = HttpRunStateReader(
        w.url, bootstrap_servers=d.bootstrap, events_topic=d.names.events, wait_s=5.0
    )

    def expired() -> bool:
        state = reader.read("run-late")
        assert state is not None and state.approval is not None
        assert state.approval.outcome is ApprovalOutcome.EXPIRED, state.approval
        return True

    assert_eventually(expired, timeout_s=30, what="approval expired by the worker")
    records = d.read(d.names.events)
    end = reader.latest_position("run-late")
    assert end is not None and end.offset > records[-1].offset  # the partition ends in a marker
    state = reader.read("run-late", after=end)  # raised QueryError (504) before
    assert state is not None and state.approval is not None
    assert state.approval.outcome is ApprovalOutcome.EXPIRED


def test_a_waiting_read_makes_the_worker_commit_before_its_interval(
    deployment: Deployment,
) -> None:
    # One checkpoint every 10 minutes: every read below waits for a write, so only the
    # worker's early checkpoint for a waiting read can answer it within the reader's 20 s.
    d = deployment
    w = d.worker("w1", env={"RUNSTATE_RUNTIME_COMMIT_INTERVAL_S": "600"}).start()
    w.wait_ready(partitions=1)
    reader = HttpRunStateReader(
        w.url, bootstrap_servers=d.bootstrap, events_topic=d.names.events, wait_s=20.0
    )
    with d.producer() as p:
        run = DurableRun.start(
            p, reader, run_id="run-early", agent="a", input="{}", prompt_version="p@1",
            owner="o", source="test", holder="proc-a",
        )  # fmt: skip
        run.step("one", lambda ctx: "1")
        later = DurableRun.attach(p, reader, "run-early", holder="proc-b")
        assert later.epoch == 2
        assert later.step("one", lambda ctx: "never") == "1"
        later.complete("done")
    s = reader.read("run-early", after=reader.latest_position("run-early"))
    assert s is not None and s.status is RunStatus.COMPLETED
    assert [c.step for c in s.completed_steps] == ["one"]
