"""A standby takes over from a worker killed with -9 (or stopped) and restores only the tail.

w-1 runs as a process of its own (so it can be killed outright); w-2 runs in this process
with ``standby_replicas=1``, so it keeps a standby of every partition w-1 owns and its
assignment restores can be inspected. After the load, w-1 is killed (or stopped) while
more events arrive; w-2 takes its partitions over. Its restore of each must read exactly the
changelog records committed after its standby's last read (counted from the changelog
itself, no timing), fewer than the whole partition that a worker without a standby reads,
and the outputs must stay exactly-once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.runtime.app import build_worker
from runstate.runtime.recovery import AssignedRestore, ChangelogRestorer, changelog_consumer
from runstate.runtime.standby import Standbys
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    Running,
    WorkerProcess,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_events,
    read,
    runtime_config,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.mark.parametrize(
    ("ending", "standby_interval_s"),
    [
        # killed: w-2 waits out the session timeout, its standby reads all w-1 committed
        (signal.SIGKILL, 0.2),
        # stopped: w-1 hands over at once, while w-2's standby rests between its ticks
        (signal.SIGTERM, 5.0),
    ],
    ids=["kill-9", "stop"],
)
def test_a_standby_takeover_restores_only_what_was_committed_since_its_last_read(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    ending: signal.Signals,
    standby_interval_s: float,
) -> None:
    names = TopicNames(unique_name("rts"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(200, prefix="run", seed=11), seed=11))
    half = len(events) // 2
    produce_events(kafka_bootstrap, names, events[:half])

    first = WorkerProcess(
        runtime_config(kafka_bootstrap, names, PARTITIONS, worker_id="w-1"),
        tmp_path / "w-1.log",
    ).start()
    assert_eventually(first.has_partitions, timeout_s=90, what="w-1 assigned")
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(kafka_bootstrap), names.runs_changelog)
    )
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        worker_id="w-2",
        standby_replicas=1,
        standby_interval_s=standby_interval_s,
        standby_tick_records=2_000,
    )
    second = Running(build_worker(config, restore=restore))
    worker = second.worker.worker
    standbys = worker.standbys
    assert isinstance(standbys, Standbys)
    try:

        def w1_partitions() -> set[int]:
            return set(range(PARTITIONS)) - set(worker.owned_partitions())

        def standbys_warm() -> bool:
            theirs = w1_partitions()
            last = dict(standbys.last_read)
            return (
                bool(worker.owned_partitions())
                and bool(theirs)
                and standbys.partitions == theirs
                and all(last.get(p) is not None for p in theirs)
            )

        assert_eventually(
            lambda: standbys_warm() or second.error is not None or not first.alive,
            timeout_s=120,
            what="w-2 owns partitions and keeps warm standbys of w-1's",
        )
        assert second.error is None and first.alive, first.log_tail()
        taken = w1_partitions()

        produce_events(kafka_bootstrap, names, events[half:])
        if ending == signal.SIGKILL:
            first.kill9()
        else:
            assert first.stop() == 0, first.log_tail()
        assert_eventually(
            lambda: (
                set(worker.owned_partitions()) == set(range(PARTITIONS)) or second.error is not None
            ),
            timeout_s=120,
            what="w-2 took w-1's partitions over",
        )
        assert_eventually(
            lambda: check_outputs(kafka_bootstrap, names).complete or second.error is not None,
            timeout_s=180,
            what="every event's change committed",
        )
    finally:
        second.stop()
        first.stop()

    print(
        f"w-2's standbys: {standbys.records} records in {standbys.ticks} ticks, "
        f"{standbys.busy_s:.2f}s of the loop's time"
    )
    verdict = check_outputs(kafka_bootstrap, names)
    assert verdict.complete and verdict.problems == [], verdict.problems

    changelog = read(kafka_bootstrap, names.runs_changelog)
    for p in sorted(taken):
        assert p in standbys.handed_over, f"partition {p} was not taken over from a standby"
        since = standbys.handed_over[p]
        report = [r for r in restore.reports if r.partition == p][-1]
        assert report.last_offset is not None
        offsets = [
            r.offset for r in changelog if r.partition == p and r.offset <= report.last_offset
        ]
        after_standby = [o for o in offsets if since is None or o > since]
        print(
            f"partition {p}: takeover restored {report.records} changelog records "
            f"(committed after the standby's last read: {len(after_standby)}; "
            f"the whole partition, without a standby: {len(offsets)})"
        )
        assert report.records == len(after_standby)
        assert report.first_offset is None or since is None or report.first_offset > since
        assert since is not None and report.records < len(offsets)
