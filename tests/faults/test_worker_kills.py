"""Scenario 1: kill -9 of workers at the runtime's commit points and at random times, under
load.

The points (see :mod:`tests.faults.crashpoints`) are the four steps of one checkpoint:
outputs queued in the open transaction (``after_produce``), offsets in the transaction but
not committed (``before_commit``), committed but the local store not updated
(``after_commit``), store updated (``after_apply``). The worker is armed while it works and
SIGKILLs itself at the n-th pass of the point (n random); a random kill is a plain kill -9
at a random moment. After each death the worker is restarted at once (as a supervisor
would) with its data folder kept, and the time until every partition produces output again
is the recovery time. The oracle then wants every change and dead letter exactly once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.faults.conftest import DeploymentFactory
from tests.faults.crashpoints import ORDER
from tests.faults.harness import Deployment, Load, agent_runs, interleave
from tests.faults.oracle import Oracle, Verdict, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually
from tests.runtime.support import BAD_RECORDS, produce_raw

#: kill -9 per commit point, and at random moments, in the full scenario.
PER_POINT = 20
RANDOM_KILLS = 16


def kill_plan(rng: random.Random, *, per_point: int, random_kills: int) -> list[str]:
    """Every point ``per_point`` times and ``random_kills`` random kills, shuffled."""
    plan = [p for p in ORDER for _ in range(per_point)] + ["random"] * random_kills
    rng.shuffle(plan)
    return plan


@dataclass
class KillReport:
    recoveries: list[float] = field(default_factory=list)
    how: Counter[str] = field(default_factory=Counter)
    verdict: Verdict | None = None
    catch_up_s: float = 0.0
    starts: dict[str, int] = field(default_factory=dict)
    events: int = 0


def kill_battery(
    d: Deployment, *, kills: list[str], workers: int, rate: float, seed: int
) -> KillReport:
    """Run load through ``workers`` workers and kill one at each entry of ``kills``; the
    load (with a few bad records) lasts until the last kill."""
    ws = [d.worker(f"w{i + 1}").start() for i in range(workers)]
    for w in ws:
        w.wait_ready()
    rng = random.Random(seed)
    produce_raw(d.bootstrap, d.names.events, BAD_RECORDS)
    # more than the kills can use up: the load stops after the last kill
    runs = max(150, int(rate * 10 * len(kills) / 12))
    events = list(interleave(agent_runs(runs, prefix=f"k{seed}", seed=seed), active=50, seed=seed))
    load = Load(d, events, rate_per_s=rate).start()
    report = KillReport()
    d.wait_progress({}, timeout_s=90)
    for i, point in enumerate(kills):
        victim = ws[i % len(ws)]
        if point == "random":
            time.sleep(rng.uniform(0.2, 3.0))
            victim.kill9()
            how = "random"
        else:
            victim.arm(point, rng.randint(1, 10))
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
    report.events = len(load.acked)
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
@pytest.mark.timeout(1500)
def test_kill_9_at_commit_points_and_random_times(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "1", "kill -9 of a worker (commit points + random)"
    kills = kill_plan(random.Random(seed), per_point=PER_POINT, random_kills=RANDOM_KILLS)
    scenario.injections = (
        f"{len(kills)} x kill -9 over 2 workers, shuffled: {PER_POINT} at each of"
        f" {', '.join(ORDER)} (n-th pass, n random 1-10) and {RANDOM_KILLS} at random moments"
    )
    d = deployment_factory(kafka_bootstrap, partitions=4)
    r = kill_battery(d, kills=kills, workers=2, rate=100, seed=seed)
    assert r.verdict is not None
    scenario.verdict(r.verdict)
    scenario.recovery_s = [round(x, 2) for x in r.recoveries]
    scenario.figures.update(
        {
            "kill -9": sum(r.how.values()),
            "kills by point": dict(sorted(r.how.items())),
            "recovery": "death until every partition produced new output (restart included)",
            "events acknowledged": r.events,
            "runs": r.verdict.runs,
            "changes (each exactly once)": r.verdict.changes,
            "dead letters (each exactly once)": r.verdict.dead_letters,
            "catch-up after the last kill": f"{r.catch_up_s:.1f} s",
            "worker starts": r.starts,
        }
    )
    assert sum(r.how.values()) == len(kills), r.how
    assert r.verdict.clean, r.verdict.summary()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_kill_9_at_each_commit_point_quick(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory, seed: int
) -> None:
    """The fast variant in ``make test``: one worker, one kill -9 at each commit point."""
    d = deployment_factory(kafka_bootstrap, partitions=2)
    r = kill_battery(d, kills=list(ORDER), workers=1, rate=100, seed=seed)
    assert r.verdict is not None and r.verdict.clean, r.verdict and r.verdict.summary()
    assert dict(r.how) == dict.fromkeys(ORDER, 1), r.how
    assert r.verdict.changes > 0 and r.verdict.dead_letters == len(BAD_RECORDS)
