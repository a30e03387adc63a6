"""Scenario 2: a stalled worker (SIGSTOP past the session timeout) loses its partitions to
another worker, then wakes up (SIGCONT). Whatever it still had in flight must not corrupt
the table, the latest state or the change stream."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Load, WorkerProcess, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually

STALLS = 3


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_stalled_worker_cannot_corrupt_state_after_takeover(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory, scenario: ScenarioResult
) -> None:
    scenario.scenario, scenario.title = "2", "stalled worker (SIGSTOP/SIGCONT) and takeover"
    d = deployment_factory(kafka_bootstrap, partitions=4)
    hold_s = d.session_timeout_s + 8
    scenario.injections = (
        f"{STALLS} x SIGSTOP of the worker owning partitions for {hold_s:.0f} s (session"
        f" timeout {d.session_timeout_s:.0f} s) under load, then SIGCONT"
    )
    w1, w2 = d.worker("w1").start(), d.worker("w2").start()
    w1.wait_ready()
    w2.wait_ready()
    rng = random.Random(2)
    events = list(interleave(agent_runs(600, prefix="s2", seed=2), active=60, seed=2))
    load = Load(d, events, rate_per_s=120).start()
    d.wait_progress({}, timeout_s=60)
    takeovers: list[float] = []
    for i in range(STALLS):
        stalled, other = (w1, w2) if i % 2 == 0 else (w2, w1)
        time.sleep(rng.uniform(1.0, 3.0))
        stalled.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        since = d.output_marks()

        def taken_over(other: WorkerProcess = other) -> bool:
            h = other.health()
            assert h is not None and len(h["active_partitions"]) == d.partitions, h
            return True

        assert_eventually(taken_over, timeout_s=90, what="the other worker owns everything")
        d.wait_progress(since, timeout_s=90)
        takeovers.append(time.monotonic() - stopped_at)
        time.sleep(max(0.0, hold_s - (time.monotonic() - stopped_at)))
        stalled.signal(signal.SIGCONT)
        stalled.wait_ready(timeout_s=90)
    load.stop_flag.set()
    load.wait()
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=180, acked=load.acked)
    if verdict.clean:
        verdict = oracle.check(acked=load.acked, query=w1)
    scenario.verdict(verdict)
    scenario.recovery_s = [round(x, 2) for x in takeovers]
    scenario.figures.update(
        {
            "recovery": "SIGSTOP until the other worker owns every partition and all progress",
            "events": verdict.events,
            "identical re-sent changes (allowed)": verdict.change_copies,
            "worker starts": {w.worker_id: w.starts for w in (w1, w2)},
        }
    )
    assert w1.alive and w2.alive, "a worker died after SIGCONT"
    assert verdict.clean, verdict.summary()
