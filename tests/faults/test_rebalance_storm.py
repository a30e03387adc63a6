"""Scenario 4: a rebalance storm. Three workers are started, stopped and killed every few
seconds for about a minute and a half under load: no loss, no duplicate with different
content, no crash loop; the longest pause of any partition is reported."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Deployment, Load, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult

STORM_S = 90.0


def watch_pauses(d: Deployment, stop: threading.Event, pauses: dict[int, float]) -> None:
    """Longest time each partition's output did not grow (sampled every 0.5 s)."""
    last_growth: dict[int, float] = {}
    marks: dict[int, int] = {}
    while not stop.is_set():
        now = time.monotonic()
        try:
            current = d.output_marks()
        except Exception:
            current = marks
        for p, hi in current.items():
            if hi > marks.get(p, -1):
                marks[p] = hi
                last_growth[p] = now
            pauses[p] = max(pauses.get(p, 0.0), now - last_growth.get(p, now))
        stop.wait(0.5)


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_rebalance_storm(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "4", "rebalance storm (3 workers)"
    d = deployment_factory(kafka_bootstrap, partitions=6)
    ws = [d.worker(f"w{i + 1}") for i in range(3)]
    for w in ws:
        w.start()
    for w in ws:
        w.wait_ready()
    rng = random.Random(seed)
    events = list(interleave(agent_runs(1200, prefix="s4", seed=seed), active=80, seed=seed))
    load = Load(d, events, rate_per_s=100).start()
    d.wait_progress({}, timeout_s=60)
    stop = threading.Event()
    pauses: dict[int, float] = {}
    watcher = threading.Thread(target=watch_pauses, args=(d, stop, pauses), daemon=True)
    watcher.start()
    actions: dict[str, int] = {"start": 0, "stop": 0, "kill -9": 0}
    unexpected_exits: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < STORM_S:
        time.sleep(rng.uniform(2.0, 5.0))
        for w in ws:
            if w.proc is not None and not w.alive and w.proc.returncode not in (-9, 0, -15):
                unexpected_exits.append(f"{w.worker_id} exit {w.proc.returncode}")
        running = [w for w in ws if w.alive]
        idle = [w for w in ws if not w.alive]
        choice = rng.choice(["start", "stop", "kill -9"]) if len(running) > 1 else "start"
        if choice == "start" and not idle:
            choice = rng.choice(["stop", "kill -9"])
        if choice == "start":
            rng.choice(idle).start()
        elif choice == "stop":
            rng.choice(running).stop()
        else:
            rng.choice(running).kill9()
        actions[choice] += 1
    for w in ws:
        if not w.alive:
            w.start()
    settle = time.monotonic()
    load.stop_flag.set()
    load.wait()
    stop.set()
    watcher.join(5)
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=240, acked=load.acked)
    if verdict.clean:
        verdict = oracle.check(acked=load.acked, query=ws[0])
    scenario.injections = (
        f"{sum(actions.values())} membership changes in {STORM_S:.0f} s over 3 workers"
        f" ({', '.join(f'{k} {v}' for k, v in actions.items())}), 6 partitions"
    )
    scenario.verdict(verdict)
    scenario.recovery_s = [round(v, 2) for _, v in sorted(pauses.items())]
    scenario.figures.update(
        {
            "recovery": "the longest output pause of each partition during the storm",
            "max pause of a partition during the storm": f"{max(pauses.values()):.1f} s",
            "pause per partition (s)": {p: round(v, 1) for p, v in sorted(pauses.items())},
            "settle after the storm (all members back, oracle clean)": (
                f"{time.monotonic() - settle:.1f} s"
            ),
            "unexpected worker exits (crash loop check)": unexpected_exits or "none",
            "kill -9": actions["kill -9"],
            "changes (each exactly once)": verdict.changes,
        }
    )
    assert all(w.alive for w in ws), [w.tail() for w in ws if not w.alive]
    assert not unexpected_exits, unexpected_exits
    assert verdict.clean, verdict.summary()
