"""kill -9 at the worst moments: nothing doubled, nothing lost, states equal to the fold.

The worker runs as ``python -m runstate.runtime`` and dies, while events keep arriving,
at every point of the commit protocol (through ``RUNSTATE_RUNTIME_CRASH_AT``, which exits
137 with no cleanup) and at random moments (SIGKILL). Each restart restores its partitions
from the changelog and carries on. A ``read_committed`` reader must then find every
``(run_id, version)`` exactly once, final states equal to the fold of the events topic, and
each bad record once in the dead-letter topic. At-least-once mode may show copies, but
every copy must be the fold's own bytes and the final states must still be the fold's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from runstate.runtime.fault_hooks import EXIT_CRASHED
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    BAD_RECORDS,
    Load,
    Verdict,
    WorkerProcess,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_raw,
    runtime_config,
    wait_s,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
RANDOM_KILLS = 3


def kill_battery(
    bootstrap: str,
    names: TopicNames,
    log: Path,
    *,
    crash_points: Sequence[str],
    random_kills: int,
    exactly_once: bool,
    seed: int,
) -> tuple[int, Verdict]:
    """Kill the worker at each crash point, then ``random_kills`` times at random, under
    load; restart it each time; returns the kills and the converged verdict."""
    rng = random.Random(seed)
    create_topics(bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(250, prefix="run", seed=seed), seed=seed))
    assert len(events) > 2000
    produce_raw(bootstrap, names.events, BAD_RECORDS)
    config = runtime_config(bootstrap, names, PARTITIONS, batch_size=50, exactly_once=exactly_once)
    worker = WorkerProcess(config, log)
    load = Load(bootstrap, names, events, rate_per_s=80).start()
    kills = 0
    try:
        for point in crash_points:
            worker.start(crash_at=point)
            assert_eventually(
                lambda: not worker.alive,
                timeout_s=90,
                what=f"the worker dies at {point}\n{worker.log_tail()}",
            )
            assert worker.returncode == EXIT_CRASHED, worker.log_tail()
            kills += 1
        for _ in range(random_kills):
            worker.start()
            assert_eventually(worker.has_partitions, timeout_s=60, what=worker.log_tail())
            wait_s(rng.uniform(1.0, 6.0))  # a random moment: restoring the rest, or working
            assert worker.alive, worker.log_tail()
            worker.kill9()
            kills += 1
        worker.start()
        load.join(240)
        verdict = assert_eventually(
            lambda: (
                (
                    v := check_outputs(
                        bootstrap,
                        names,
                        bad_records=len(BAD_RECORDS),
                        copies_allowed=not exactly_once,
                    )
                )
                and v.complete
                and not v.problems
                and v
            ),
            timeout_s=120,
            interval_s=2.0,
            what=f"every change after {kills} kills\n{worker.log_tail()}",
        )
        assert verdict.expected.events == len(events)
        assert worker.alive, worker.log_tail()
    finally:
        load.stop()
        code = worker.stop()
    assert code == 0, worker.log_tail()
    return kills, verdict


def test_kill_9_at_commit_points_and_random_moments(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    points = ("after_commit:5", "before_commit:4", "after_produce:3", "after_apply:6")
    names = TopicNames(unique_name("rtk"))
    kills, _ = kill_battery(
        kafka_bootstrap,
        names,
        tmp_path / "worker.log",
        crash_points=points,
        random_kills=RANDOM_KILLS,
        exactly_once=True,
        seed=7,
    )
    assert kills == len(points) + RANDOM_KILLS
    final = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert final.problems == [], final.problems
    assert set(final.change_counts.values()) == {1}


def test_at_least_once_survives_kills_with_identical_copies_only(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Without transactions a crash may repeat outputs; the reducer's idempotency keeps the
    state right and each repeated change byte-identical. Kills: between the store apply and
    the offset commit (``before_commit``), after outputs but before the flush completes
    (``after_produce``), and at random."""
    points = ("before_commit:4", "after_produce:3")
    names = TopicNames(unique_name("rta"))
    kills, verdict = kill_battery(
        kafka_bootstrap,
        names,
        tmp_path / "worker.log",
        crash_points=points,
        random_kills=2,
        exactly_once=False,
        seed=8,
    )
    assert kills == len(points) + 2
    assert verdict.problems == []
