"""A standby takeover, measured: what a worker with a warm standby restores when it takes a
partition over, against what was committed since its standby's last read.

w-1 runs as a process of its own (so it can be killed outright); w-2 runs in this process
with ``standby_replicas=1``, so it keeps a standby of every partition w-1 owns and its
assignment restores can be inspected. After the first half of the events, w-1 is killed (or
stopped) while the second half arrives; w-2 takes its partitions over. Used by
``tests/runtime/test_standby_takeover.py`` and the fault battery's standby scenario.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from runstate.runtime.app import build_worker
from runstate.runtime.recovery import (
    AssignedRestore,
    ChangelogRestorer,
    KafkaHighWatermarks,
    changelog_consumer,
)
from runstate.runtime.standby import Standbys
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    Running,
    Verdict,
    WorkerProcess,
    agent_runs,
    check_outputs,
    create_topics,
    interleave,
    produce_events,
    read,
    runtime_config,
)

PARTITIONS = 4


@dataclass(frozen=True)
class PartitionTakeover:
    """One partition w-2 took over from w-1."""

    partition: int
    #: the changelog offset w-2's standby had read up to when it was promoted (None: nothing)
    standby_last_read: int | None
    #: changelog records the takeover's restore read
    restored: int
    #: changelog records committed after the standby's last read (what it had to read)
    committed_since_standby: int
    #: changelog records of the whole partition (what a worker without a standby reads)
    whole_partition: int
    first_restored: int | None


@dataclass(frozen=True)
class Takeover:
    partitions: list[PartitionTakeover]
    standby_records: int
    standby_ticks: int
    standby_busy_s: float
    verdict: Verdict


def standby_takeover(
    bootstrap: str,
    names: TopicNames,
    logs: Path,
    *,
    ending: signal.Signals,
    standby_interval_s: float,
    runs: int = 200,
    seed: int = 11,
    static_membership: bool = True,
) -> Takeover:
    """Run the takeover and measure it; asserts only that it happened (the caller judges).

    With ``static_membership=False`` a stopped w-1 leaves the group at once (a static member
    keeps its partitions until its session times out, while w-2's standby reads on)."""
    create_topics(bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(runs, prefix="run", seed=seed), seed=seed))
    half = len(events) // 2
    produce_events(bootstrap, names, events[:half])

    first = WorkerProcess(
        runtime_config(
            bootstrap, names, PARTITIONS, worker_id="w-1", static_membership=static_membership
        ),
        logs / "w-1.log",
    ).start()
    assert_eventually(first.has_partitions, timeout_s=90, what="w-1 assigned")
    restore = AssignedRestore(
        ChangelogRestorer(changelog_consumer(bootstrap), names.runs_changelog),
        high_marks=KafkaHighWatermarks(bootstrap),
    )
    config = runtime_config(
        bootstrap,
        names,
        PARTITIONS,
        worker_id="w-2",
        standby_replicas=1,
        standby_interval_s=standby_interval_s,
        standby_tick_records=2_000,
        static_membership=static_membership,
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

        produce_events(bootstrap, names, events[half:])
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
            lambda: check_outputs(bootstrap, names).complete or second.error is not None,
            timeout_s=180,
            what="every event's change committed",
        )
    finally:
        second.stop()
        first.stop()

    changelog = read(bootstrap, names.runs_changelog)
    out = []
    for p in sorted(taken):
        assert p in standbys.handed_over, f"partition {p} was not taken over from a standby"
        since = standbys.handed_over[p]
        report = [r for r in restore.reports if r.partition == p][-1]
        assert report.last_offset is not None
        offsets = [
            r.offset for r in changelog if r.partition == p and r.offset <= report.last_offset
        ]
        after_standby = [o for o in offsets if since is None or o > since]
        out.append(
            PartitionTakeover(
                partition=p,
                standby_last_read=since,
                restored=report.records,
                committed_since_standby=len(after_standby),
                whole_partition=len(offsets),
                first_restored=report.first_offset,
            )
        )
    return Takeover(
        out, standbys.records, standbys.ticks, standbys.busy_s, check_outputs(bootstrap, names)
    )
