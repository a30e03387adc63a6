"""How fast one worker goes end to end (printed for the notes, not asserted)."""

from __future__ import annotations

import time

import pytest

from tests.factories import make_run
from tests.polling import assert_eventually
from tests.processors.processor_support import (
    Deployment,
    DeploymentFactory,
    wait_processed_all,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(deployment_factory: DeploymentFactory) -> Deployment:
    return deployment_factory("speed", 4)


def test_one_worker_events_per_second(deployment: Deployment) -> None:
    d = deployment
    events = [e for i in range(500) for e in make_run(f"run-{i:03d}", seed=i)]
    with d.producer() as p:
        for e in events:
            p.send(e)
    w = d.worker("w1").start()
    w.wait_ready()

    def started() -> float:
        _, m = w.get("/metrics")
        assert m.get("outcomes", {}).get("applied"), m
        return time.monotonic()

    t0 = assert_eventually(started, timeout_s=30, interval_s=0.05, what="first event applied")
    wait_processed_all(d, w, timeout_s=55)
    elapsed = time.monotonic() - t0
    _, m = w.get("/metrics")
    assert m["outcomes"]["applied"] == len(events)
    print(
        f"\n[figure] one worker end to end: {len(events)} events in {elapsed:.1f}s = "
        f"{len(events) / elapsed:.0f} events/s (each applied event: state-changes and "
        "latest-state sends awaited, RocksDB write, changelog send)"
    )
