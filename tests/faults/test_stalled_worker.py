"""Scenario 2: a zombie. A worker is SIGSTOPped past its session timeout under load, with
a transaction open and a second's worth of processed, uncommitted records in it; the group
gives its partitions to the other worker, which restores and commits; then the stalled
worker is SIGCONTed and carries on where it stopped, with an open transaction and a stale
group generation.

Kafka must refuse it: its ``send_offsets_to_transaction`` fails for the stale generation,
or its producer was fenced when the broker aborted its timed-out transaction. Nothing it
made may become visible to a ``read_committed`` reader after the new owner's first commit.
Everything it had in flight is re-made by the new owner from the committed offsets, so a
record of the zombie that got through would show as a second copy: the oracle wants every
``(run_id, version)`` exactly once in the state-changes topic, every bad record exactly once
in the dead-letter topic, and the latest-state and changelog topics equal to the fold.
Bad records are mixed into the load so the dead letters are in the zombie's window too.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Deployment, Load, WorkerProcess, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually
from tests.runtime.support import BAD_RECORDS, produce_raw

STALLS = 3
EXIT_FENCED = 75
#: A long interval, so a stalled worker holds plenty of uncommitted work.
COMMIT_INTERVAL_S = 1.0


def _log_size(w: WorkerProcess) -> int:
    return len(w.log_path.read_bytes()) if w.log_path.exists() else 0


def _refusal(w: WorkerProcess, since: int) -> str | None:
    """How the woken zombie found out, from its log and exit code; None until it has either
    exited or given its partitions up (an abort alone may still end in either)."""
    text = w.log_path.read_bytes()[since:].decode(errors="replace")
    seen = [
        how
        for needle, how in (
            ("aborting the checkpoint", "its checkpoint was refused and aborted"),
            ("fenced", "its producer was fenced"),
            ("given up", "it gave its partitions up"),
        )
        if needle in text
    ]
    code = None if w.proc is None else w.proc.poll()
    if code is not None:
        return "; ".join([*seen, f"exited {code}"])
    if "given up" in text:
        return "; ".join(seen)
    return None


def stall_and_wake(
    d: Deployment, *, stalls: int, seed: int, runs: int, rate: float
) -> tuple[list[float], list[str], Load]:
    """``stalls`` zombies in turn under load; returns the takeover times, how each zombie
    found out, and the load (stopped)."""
    d.runtime["commit_interval_s"] = str(COMMIT_INTERVAL_S)
    w1, w2 = d.worker("w1").start(), d.worker("w2").start()
    w1.wait_ready()
    w2.wait_ready()
    rng = random.Random(seed)
    events = list(interleave(agent_runs(runs, prefix="s2", seed=seed), active=60, seed=seed))
    load = Load(d, events, rate_per_s=rate).start()
    d.wait_progress({}, timeout_s=60)
    hold_s = d.session_timeout_s + 8
    takeovers: list[float] = []
    refusals: list[str] = []
    for i in range(stalls):
        stalled, other = (w1, w2) if i % 2 == 0 else (w2, w1)
        produce_raw(d.bootstrap, d.names.events, BAD_RECORDS)
        time.sleep(rng.uniform(1.0, 3.0))
        stalled.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        log_at = _log_size(stalled)
        since = d.output_marks()
        produce_raw(d.bootstrap, d.names.events, BAD_RECORDS)

        def taken_over(other: WorkerProcess = other) -> bool:
            h = other.health()
            assert h is not None and len(h["active_partitions"]) == d.partitions, h
            return True

        assert_eventually(taken_over, timeout_s=90, what="the other worker owns everything")
        # every partition has new committed output: the new owner's first commits are in
        d.wait_progress(since, timeout_s=90)
        takeovers.append(time.monotonic() - stopped_at)
        time.sleep(max(0.0, hold_s - (time.monotonic() - stopped_at)))
        stalled.signal(signal.SIGCONT)
        how = assert_eventually(
            lambda s=stalled, at=log_at: _refusal(s, at),  # type: ignore[misc]
            timeout_s=60,
            what=f"the zombie {stalled.worker_id} is refused",
        )
        if not stalled.alive:
            stalled.start()  # a supervisor restarts it
        refusals.append(f"{stalled.worker_id}: {how}")
        stalled.wait_ready(timeout_s=90)
    load.stop_flag.set()
    load.wait()
    assert w1.alive and w2.alive, "a worker died after SIGCONT"
    return takeovers, refusals, load


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_a_zombie_worker_gets_nothing_in_after_the_takeover(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "2", "zombie: stalled worker (SIGSTOP/SIGCONT), takeover"
    d = deployment_factory(kafka_bootstrap, partitions=4)
    hold_s = d.session_timeout_s + 8
    scenario.injections = (
        f"{STALLS} x SIGSTOP of a worker for {hold_s:.0f} s (session timeout"
        f" {d.session_timeout_s:.0f} s, commit interval {COMMIT_INTERVAL_S:.0f} s) under load"
        " with bad records in it, then SIGCONT once the other worker has committed"
    )
    takeovers, refusals, load = stall_and_wake(d, stalls=STALLS, seed=seed, runs=600, rate=120)
    oracle = Oracle(d.bootstrap, d.names)
    verdict, _ = converge(oracle, timeout_s=180, acked=load.acked)
    if verdict.clean:
        verdict = oracle.check(acked=load.acked, query=d.workers[0])
    scenario.verdict(verdict)
    scenario.recovery_s = [round(x, 2) for x in takeovers]
    scenario.figures.update(
        {
            "recovery": "SIGSTOP until the other worker owns every partition and all progress",
            "how each zombie found out": refusals,
            "events": verdict.events,
            "changes (each exactly once, read_committed)": verdict.changes,
            "dead letters (each exactly once, read_committed)": verdict.dead_letters,
            "worker starts": {w.worker_id: w.starts for w in d.workers},
        }
    )
    assert verdict.clean, verdict.summary()


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_zombie_quick(kafka_bootstrap: str, deployment_factory: DeploymentFactory) -> None:
    """The fast variant in ``make test``: one stall, checked exactly-once."""
    d = deployment_factory(kafka_bootstrap, partitions=2)
    _, refusals, load = stall_and_wake(d, stalls=1, seed=2, runs=150, rate=100)
    verdict, _ = converge(Oracle(d.bootstrap, d.names), timeout_s=120, acked=load.acked)
    assert verdict.clean, verdict.summary()
    assert len(refusals) == 1 and verdict.dead_letters >= 2 * len(BAD_RECORDS)
