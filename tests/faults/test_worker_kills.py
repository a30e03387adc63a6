"""Scenario 1: kill -9 of workers at chosen points and at random times, under load.

Chosen points (see :mod:`tests.faults.crashpoints`): outputs acknowledged but table not
written; RocksDB written but changelog not sent; changelog flushed but offsets not committed.
After each death the worker is restarted at once (as a supervisor would) and the time until
every partition produces output again is the recovery time.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import (
    Deployment,
    Load,
    agent_runs,
    interleave,
)
from tests.faults.oracle import Oracle, Verdict, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually

TEN_KILLS = [
    "after_outputs",
    "after_rocksdb",
    "before_commit",
    "random",
    "after_rocksdb",
    "after_outputs",
    "before_commit",
    "random",
    "after_rocksdb",
    "after_outputs",
]


@dataclass
class KillReport:
    recoveries: list[float] = field(default_factory=list)
    how: Counter[str] = field(default_factory=Counter)
    verdict: Verdict | None = None
    catch_up_s: float = 0.0
    starts: dict[str, int] = field(default_factory=dict)
    events: int = 0


def kill_battery(
    d: Deployment, *, kills: list[str], workers: int, runs: int, rate: float, seed: int
) -> KillReport:
    """Run load through ``workers`` workers and kill one at each entry of ``kills``."""
    ws = [d.worker(f"w{i + 1}").start() for i in range(workers)]
    for w in ws:
        w.wait_ready()
    rng = random.Random(seed)
    events = list(interleave(agent_runs(runs, prefix=f"k{seed}", seed=seed), active=50, seed=seed))
    load = Load(d, events, rate_per_s=rate).start()
    report = KillReport(events=len(events))
    d.wait_progress({}, timeout_s=60)
    for i, point in enumerate(kills):
        victim = ws[i % len(ws)]
        if point == "random":
            time.sleep(rng.uniform(0.5, 4.0))
            victim.kill9()
            how = "random"
        else:
            n = rng.randint(1, 3) if point == "before_commit" else rng.randint(5, 80)
            victim.arm(point, n)
            try:
                assert_eventually(victim.dead, timeout_s=60, what="crash point")
                how = point
            except AssertionError:
                victim.kill9()
                how = f"{point} (not reached in 60 s; killed)"
        died_at = time.monotonic()
        since = d.output_marks()
        victim.start()
        if d.wait_progress(since, timeout_s=180, unless=load.done.is_set) is not None:
            report.recoveries.append(time.monotonic() - died_at)
        report.how[how] += 1
        if load.done.is_set():
            break
    load.stop_flag.set()
    load.wait()
    for w in ws:
        assert w.alive, f"{w.worker_id} died after its restart:\n{w.tail()}"
    began = time.monotonic()
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=180, acked=load.acked)
    report.catch_up_s = time.monotonic() - began
    if verdict.clean:
        verdict = oracle.check(acked=load.acked, query=ws[0])
    report.verdict = verdict
    report.starts = {w.worker_id: w.starts for w in ws}
    assert not load.failed, load.failed[:5]
    return report


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_kill_9_at_chosen_points_and_random_times(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory, scenario: ScenarioResult
) -> None:
    scenario.scenario, scenario.title = "1", "kill -9 of a worker (chosen points + random)"
    scenario.injections = (
        "10 x kill -9 over 2 workers: 3 after outputs/before table write, 3 after RocksDB"
        "/before changelog send, 2 after changelog flush/before offset commit, 2 random"
    )
    d = deployment_factory(kafka_bootstrap, partitions=4)
    r = kill_battery(d, kills=TEN_KILLS, workers=2, runs=1500, rate=120, seed=1)
    assert r.verdict is not None
    scenario.verdict(r.verdict)
    scenario.recovery_s = [round(x, 2) for x in r.recoveries]
    scenario.figures.update(
        {
            "kills by point": dict(r.how),
            "events in the topic": r.verdict.events,
            "runs": r.verdict.runs,
            "identical re-sent changes (allowed)": r.verdict.change_copies,
            "catch-up after the last kill": f"{r.catch_up_s:.1f} s",
            "worker starts": r.starts,
        }
    )
    assert sum(r.how.values()) == len(TEN_KILLS), r.how
    assert r.verdict.clean, r.verdict.summary()


@pytest.mark.integration
def test_one_kill_9_during_processing_quick(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory
) -> None:
    """The fast variant in ``make test``: one worker, one kill -9 after a RocksDB write."""
    d = deployment_factory(kafka_bootstrap, partitions=2)
    r = kill_battery(
        d,
        kills=["after_rocksdb"],
        workers=1,
        runs=150,
        rate=150,
        seed=int.from_bytes(os.urandom(2)),
    )
    assert r.verdict is not None and r.verdict.clean, r.verdict and r.verdict.summary()
    assert sum(r.how.values()) == 1
