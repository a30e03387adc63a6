"""Crash safety: kill -9 in the middle of a stream, restart, and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time

import pytest

from runstate.runs.run_view import run_to_json
from runstate.streams.partitioning import partition_for
from tests.factories import make_run
from tests.polling import assert_eventually
from tests.processors.processor_support import (
    Deployment,
    DeploymentFactory,
    wait_processed_all,
)

pytestmark = pytest.mark.integration

RUNS = 200


@pytest.fixture
def deployment(deployment_factory: DeploymentFactory) -> Deployment:
    return deployment_factory("proc", 4)


def test_kill_9_mid_stream_loses_and_doubles_nothing(deployment: Deployment) -> None:
    d = deployment
    w = d.worker("w1").start()
    w.wait_ready()
    events = [
        e
        for i in range(RUNS)
        for e in make_run(
            f"run-{i:03d}",
            seed=i,
            with_approval=i % 4 == 0,
            failures=i % 3 == 0,
            end="open" if i % 5 == 0 else "completed",
        )
    ]
    sent = threading.Event()

    def produce() -> None:
        with d.producer() as p:
            for n, e in enumerate(events):
                p.send(e)
                if n % 200 == 0:
                    p.flush()
                    time.sleep(0.05)  # a stream, not one burst
        sent.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    def some_applied() -> bool:
        _, m = w.get("/metrics")
        assert m["outcomes"].get("applied", 0) >= len(events) // 4, m["outcomes"]
        return True

    assert_eventually(some_applied, timeout_s=30, what="a quarter applied")
    w.kill9()
    killed_at = time.monotonic()
    w2 = d.worker("w1b", data_dir=w.data_dir).start()

    def processing_again() -> bool:
        status, m = w2.get("/metrics")
        assert status == 200 and m["outcomes"], m
        return True

    assert_eventually(processing_again, timeout_s=45, what="restarted worker processing")
    print(f"\n[figure] kill -9 to processing again: {time.monotonic() - killed_at:.1f}s")
    assert sent.wait(60), "producer did not finish"
    producer.join()
    wait_processed_all(d, w2)

    oracle = d.oracle()
    assert len(oracle) == RUNS
    for run_id, expected in oracle.items():
        assert expected is not None
        status, body = w2.get(f"/runs/{run_id}")
        assert status == 200, body
        body.pop("served_by"), body.pop("partition")
        assert body == run_to_json(expected), run_id

    seen: dict[tuple[str, int], bytes] = {}
    for run_id, version, value in d.changes():
        assert seen.setdefault((run_id, version), value) == value, (run_id, version)
    for run_id, expected in oracle.items():
        assert expected is not None
        versions = {v for (r, v) in seen if r == run_id}
        assert versions == set(range(1, expected.version + 1)), run_id
    latest = d.latest_states()
    assert {r: s.version for r, s in latest.items()} == {
        r: s.version for r, s in oracle.items() if s is not None
    }


def test_offsets_are_committed_only_once_the_changelog_holds_their_state(
    deployment: Deployment,
) -> None:
    """Regression: faust's flush before an offset commit gives up after 0.1 s without a
    send, so under load it committed offsets whose changelog records were still queued;
    a kill -9 then lost them, and a worker restoring from the changelog (another host, a
    lost disk - or, through a stale local store, the same host) lost the run.

    Deterministic version: w1 holds its first changelog send 3 s (one slow round trip)
    and dies like kill -9 right after its first offset commit; w2 starts on an empty data
    dir, so the changelog is all it has."""
    d = deployment
    hooks = {"RUNSTATE_TEST_HOLD_FIRST_CHANGELOG_S": "3", "RUNSTATE_TEST_EXIT_AFTER_COMMIT": "1"}
    w1 = d.worker("w1", env=hooks).start()
    w1.wait_ready()
    run_id = "run-held"
    events = make_run(run_id, seed=7, failures=1, end="open")
    with d.producer() as p:
        deliveries = [p.send(e) for e in events]
        p.flush()
    last = deliveries[-1].result()

    def exited() -> bool:
        assert w1.proc is not None and w1.proc.poll() is not None, "w1 still running"
        return True

    assert_eventually(exited, timeout_s=30, what="w1 exited right after its first commit")
    w2 = d.worker("w2").start()  # an empty data dir: the state must come from the changelog
    w2.wait_ready()
    partition = partition_for(run_id.encode(), d.partitions)
    assert last.partition == partition
    status, body = w2.get(
        f"/runs/{run_id}", min_partition=partition, min_offset=last.offset, timeout=30
    )
    assert status == 200, body
    body.pop("served_by"), body.pop("partition")
    expected = d.oracle()[run_id]
    assert expected is not None
    assert body == run_to_json(expected)
