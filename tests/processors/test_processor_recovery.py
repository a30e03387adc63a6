"""Crash safety: kill -9 in the middle of a stream, restart, and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runstate.processors.run_view import run_to_json
from tests.factories import make_run
from tests.processors.processor_support import (
    Deployment,
    assert_eventually,
    wait_processed_all,
)

pytestmark = pytest.mark.integration

RUNS = 200


@pytest.fixture
def deployment(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Deployment]:
    d = Deployment(kafka_bootstrap, unique_name("proc"), 4, tmp_path)
    d.ensure_topics()
    try:
        yield d
    finally:
        d.close()


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
