"""kill -9 at the worst moments: nothing doubled, nothing lost, states equal to the fold.

The worker runs as ``python -m runstate.runtime`` and dies, while events keep arriving,
at every point of the commit protocol (through ``RUNSTATE_RUNTIME_CRASH_AT``, which exits
137 with no cleanup) and at random moments (SIGKILL). Each restart restores its partitions
from the changelog and carries on. A ``read_committed`` reader must then find every
``(run_id, version)`` exactly once, final states equal to the fold of the events topic, and
each bad record once in the dead-letter topic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.runtime.fault_hooks import EXIT_CRASHED
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    BAD_RECORDS,
    Load,
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
#: Each armed point is hit on its n-th pass; the worker must die there with 137.
CRASH_POINTS = ("after_commit:5", "before_commit:4", "after_produce:3", "after_apply:6")
RANDOM_KILLS = 3


def test_kill_9_at_commit_points_and_random_moments(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    rng = random.Random(7)
    names = TopicNames(unique_name("rtk"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(250, prefix="run", seed=7), seed=7))
    assert len(events) > 2000
    produce_raw(kafka_bootstrap, names.events, BAD_RECORDS)
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, batch_size=50)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    load = Load(kafka_bootstrap, names, events, rate_per_s=80).start()
    kills = 0
    try:
        for point in CRASH_POINTS:
            worker.start(crash_at=point)
            assert_eventually(
                lambda: not worker.alive,
                timeout_s=90,
                what=f"the worker dies at {point}\n{worker.log_tail()}",
            )
            assert worker.returncode == EXIT_CRASHED, worker.log_tail()
            kills += 1
        for _ in range(RANDOM_KILLS):
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
                (v := check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS)))
                and v.complete
                and not v.problems
                and v
            ),
            timeout_s=120,
            interval_s=2.0,
            what=f"every change once after {kills} kills\n{worker.log_tail()}",
        )
        assert verdict.expected.events == len(events)
        assert worker.alive, worker.log_tail()
    finally:
        load.stop()
        code = worker.stop()
    assert code == 0, worker.log_tail()
    final = check_outputs(kafka_bootstrap, names, bad_records=len(BAD_RECORDS))
    assert final.problems == [], final.problems
    assert set(final.change_counts.values()) == {1}
    assert kills == len(CRASH_POINTS) + RANDOM_KILLS
