"""Scenario 3: the broker stops (cleanly, then with kill -9) under load and comes back.

Acknowledged events must all be in the log and nothing doubled or wrong; producers must
recover on their own. A runtime worker that cannot ride the outage out exits with an error
(75: fenced, or its transaction or consumer failed for good; 1: its restore could not reach
the broker within ``broker_timeout_s``) and is restarted as a process supervisor would; the
restarts and their exit codes are in the figures. Every worker must serve again after each
outage."""

from __future__ import annotations

import time

import pytest

from runstate.streams.broker import LocalBroker
from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Load, Supervisor, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult

OUTAGE_S = 8.0


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_broker_stop_and_kill_under_load(
    own_broker: LocalBroker,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "3", "broker stop/start and kill -9 under load"
    scenario.injections = (
        f"broker SIGTERM stop, {OUTAGE_S:.0f} s down, start; then broker kill -9,"
        f" {OUTAGE_S:.0f} s down, start (2 workers, 1 producer, load throughout)"
    )
    d = deployment_factory(own_broker.config.bootstrap, partitions=4)
    w1, w2 = d.worker("w1").start(), d.worker("w2").start()
    w1.wait_ready()
    w2.wait_ready()
    events = list(interleave(agent_runs(700, prefix="s3", seed=seed), active=60, seed=seed))
    load = Load(d, events, rate_per_s=100).start()
    d.wait_progress({}, timeout_s=60)
    recoveries: list[float] = []
    worker_deaths: list[str] = []
    with Supervisor([w1, w2]) as supervisor:
        for how in ("stop", "kill"):
            time.sleep(3)
            if how == "stop":
                own_broker.stop()
            else:
                own_broker.kill()
            time.sleep(OUTAGE_S)
            own_broker.start()
            back = time.monotonic()
            since = d.output_marks_eventually()
            d.wait_progress(since, timeout_s=180)
            recoveries.append(time.monotonic() - back)
            for w in (w1, w2):
                if w.proc is not None and (w.proc.poll() or 0) < 0:
                    worker_deaths.append(f"{w.worker_id} killed by signal after {how}")
        load.wait(timeout_s=400)
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=240, acked=load.acked)
    if verdict.clean:
        verdict = oracle.check(acked=load.acked, query=w1)
    scenario.verdict(verdict)
    scenario.recovery_s = [round(x, 2) for x in recoveries]
    scenario.figures.update(
        {
            "recovery": "broker listening again until every partition produced new output",
            "events acknowledged": len(load.acked),
            "events not acknowledged (producer gave up)": len(load.failed),
            "worker deaths": worker_deaths or "none",
            "changes (each exactly once)": verdict.changes,
            "worker exits restarted by the supervisor (2 s back-off)": supervisor.summary(),
        }
    )
    assert not worker_deaths, worker_deaths
    assert not load.failed, load.failed[:5]
    assert verdict.clean, verdict.summary()
