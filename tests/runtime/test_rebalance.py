"""Checkpoints at the edges: nothing visible before a commit, a final one on stop, and one
before a revoked partition is given up (cooperative rebalance to a second worker); an
assigned partition that restores holds up no other.

The workers run in-process with a checkpoint interval far longer than the test, so every
commit seen here is one of those edge checkpoints, not a timed one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from runstate.runtime.app import build_worker
from runstate.runtime.config import RuntimeConfig
from runstate.runtime.recovery import (
    AssignedRestore,
    ChangelogRestorer,
    KafkaHighWatermarks,
    changelog_consumer,
)
from runstate.runtime.store import PartitionStore
from runstate.streams.partitioning import partition_for
from runstate.streams.topics import TopicNames
from tests.polling import assert_eventually
from tests.runtime.support import (
    Running,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    read,
    runtime_config,
    settled_outputs,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
NEVER_S = 3600.0  # the timed checkpoint never comes within a test


def test_outputs_stay_invisible_until_the_final_checkpoint_on_stop(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtf"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(20, prefix="run", seed=3), seed=3))
    produce_events(kafka_bootstrap, names, events)
    config = runtime_config(
        kafka_bootstrap,
        names,
        PARTITIONS,
        commit_interval_s=NEVER_S,
        transaction_timeout_ms=120_000,
    )
    running = Running(build_worker(config))
    try:
        assert_eventually(
            lambda: running.worker.worker.records == len(events) or running.error is not None,
            timeout_s=60,
            what="every event processed",
        )
        # processed and produced, inside an open transaction: a read_committed reader sees none
        assert read(kafka_bootstrap, names.state_changes) == []
        assert read(kafka_bootstrap, names.runs_changelog) == []
    finally:
        running.stop()
    settled_outputs(kafka_bootstrap, names)


def test_a_revoked_partition_is_committed_before_it_moves(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rtr"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    runs = agent_runs(40, prefix="run", seed=4)
    events = list(interleave(runs, seed=4))
    half = len(events) // 2
    produce_events(kafka_bootstrap, names, events[:half])

    def config(worker_id: str) -> RuntimeConfig:
        return runtime_config(
            kafka_bootstrap,
            names,
            PARTITIONS,
            worker_id=worker_id,
            commit_interval_s=NEVER_S,
            transaction_timeout_ms=120_000,
        )

    first = Running(build_worker(config("w-1")))
    second: Running | None = None
    try:
        assert_eventually(
            lambda: first.worker.worker.records == half or first.error is not None,
            timeout_s=60,
            what="the first half processed by w-1",
        )
        assert read(kafka_bootstrap, names.state_changes) == []  # nothing committed yet
        second = Running(build_worker(config("w-2")))
        # w-1 gives partitions up to w-2: its revocation checkpoint makes them visible
        assert_eventually(
            lambda: len(read(kafka_bootstrap, names.state_changes)) > 0,
            timeout_s=60,
            what="the revocation checkpoint committed",
        )
        produce_events(kafka_bootstrap, names, events[half:])
        both = (first, second)
        assert_eventually(
            lambda: sum(r.worker.worker.records for r in both) >= len(events),
            timeout_s=60,
            what="every event processed by one of them",
        )
    finally:
        if second is not None:
            second.stop()
        first.stop()
    verdict = settled_outputs(kafka_bootstrap, names)
    assert set(verdict.change_counts.values()) == {1}


class HeldRestore:
    """The worker's restore, holding one partition back as if its changelog were long."""

    def __init__(self, inner: AssignedRestore, held: int) -> None:
        self.inner = inner
        self.held = held
        self.release = threading.Event()
        self._waiting: PartitionStore | None = None

    @property
    def pending(self) -> frozenset[int]:
        return self.inner.pending | ({self.held} if self._waiting is not None else set())

    def begin(self, store: PartitionStore) -> None:
        self.inner.begin(store)

    def step(self) -> list[PartitionStore]:
        done = self.inner.step()
        for store in done:
            if store.partition == self.held:
                self._waiting = store
        done = [s for s in done if s.partition != self.held]
        if self._waiting is not None and self.release.is_set():
            done.append(self._waiting)
            self._waiting = None
        return done

    def cancel(self, partitions: list[int]) -> list[PartitionStore]:
        stores = self.inner.cancel(partitions)
        if self._waiting is not None and self.held in partitions:
            stores.append(self._waiting)
            self._waiting = None
        return stores


def test_owned_partitions_are_processed_while_another_restores(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    names = TopicNames(unique_name("rth"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(40, prefix="run", seed=5), seed=5))
    produce_events(kafka_bootstrap, names, events)
    held = 0
    in_held = sum(partition_for(e.run_id.encode(), PARTITIONS) == held for e in events)
    assert 0 < in_held < len(events)
    restore = HeldRestore(
        AssignedRestore(
            ChangelogRestorer(changelog_consumer(kafka_bootstrap), names.runs_changelog),
            high_marks=KafkaHighWatermarks(kafka_bootstrap),
        ),
        held,
    )
    config = runtime_config(kafka_bootstrap, names, PARTITIONS)
    running = Running(build_worker(config, restore=restore))
    worker = running.worker.worker
    try:
        assert_eventually(
            lambda: worker.records == len(events) - in_held or running.error is not None,
            timeout_s=60,
            what="the other partitions processed while one restores",
        )
        health = worker.health()
        assert health["restoring_partitions"] == [held] and not health["ready"]
        assert held not in worker.owned_partitions()
        restore.release.set()
        assert_eventually(
            lambda: worker.records == len(events) or running.error is not None,
            timeout_s=60,
            what="the restored partition processed",
        )
        assert worker.health()["restoring_partitions"] == []
        assert worker.owned_partitions() == list(range(PARTITIONS))
    finally:
        running.stop()
    verdict = settled_outputs(kafka_bootstrap, names)
    assert set(verdict.change_counts.values()) == {1}
