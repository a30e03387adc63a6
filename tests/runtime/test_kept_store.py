"""A kill -9 keeps the worker's store: the restart restores only the tail, not the changelog.

RocksDB's write-ahead log (on, not synced) is in the OS page cache when the process dies, so
the restarted worker reopens every batch it applied, with the changelog offset written in
the same batch, and reads from the changelog only what it committed and had not applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from runstate.runtime.rocksdb_store import RocksDBStore
from runstate.streams.topics import TopicNames
from tests.faults.oracle import restore_changelog
from tests.polling import assert_eventually
from tests.runtime.support import (
    Load,
    WorkerProcess,
    agent_runs,
    create_topics,
    interleave,
    produce_events,
    read,
    runtime_config,
    settled_outputs,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
RESTORED = re.compile(r"partition (\d+) restored: (\d+) records")
EVERYTHING = (b"", b"\xff" * 64)


def restored_records(log: str) -> dict[int, int]:
    """Records each partition's restore read, from the worker's log of one start."""
    return {int(p): int(n) for p, n in RESTORED.findall(log)}


def test_a_kill_9_restart_with_the_data_kept_restores_only_the_tail(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    names = TopicNames(unique_name("rtw"))
    create_topics(kafka_bootstrap, names, PARTITIONS)
    events = list(interleave(agent_runs(300, prefix="run", seed=11), seed=11))
    half = len(events) // 2
    produce_events(kafka_bootstrap, names, events[:half])
    config = runtime_config(kafka_bootstrap, names, PARTITIONS, batch_size=100)
    worker = WorkerProcess(config, tmp_path / "worker.log").start()
    load = Load(kafka_bootstrap, names, events[half:], rate_per_s=150)
    try:
        settled_outputs(kafka_bootstrap, names, timeout_s=120)
        first = restored_records(worker.log_of_this_start())
        assert set(first) == set(range(PARTITIONS)) and sum(first.values()) == 0, first
        load.start()
        assert_eventually(lambda: load.sent > 300, timeout_s=60, what="load flowing")
        worker.kill9()  # mid-load: checkpoints committed, applied, maybe one in between
        changelog = len(read(kafka_bootstrap, names.runs_changelog))
        assert changelog > 3_000, changelog
        worker.start()
        assert_eventually(
            lambda: len(restored_records(worker.log_of_this_start())) == PARTITIONS,
            timeout_s=120,
            what=f"partitions restored\n{worker.log_tail()}",
        )
        restored = restored_records(worker.log_of_this_start())
        # at most the checkpoint committed before the kill and not applied yet; without
        # the WAL every partition is read again from (nearly) its start
        assert sum(restored.values()) * 20 < changelog, (restored, changelog)
        load.join(240)
        settled_outputs(kafka_bootstrap, names, timeout_s=120)
    finally:
        load.stop()
        code = worker.stop()
    assert code == 0, worker.log_tail()
    # the stores hold exactly what a full restore of the changelog builds
    expected = restore_changelog(read(kafka_bootstrap, names.runs_changelog))
    store = RocksDBStore(config.data_dir)
    try:
        for p in range(PARTITIONS):
            kept = dict(store.open(p).items(*EVERYTHING))
            want = dict(expected[p].items(*EVERYTHING)) if p in expected else {}
            assert kept == want, f"partition {p}: {len(kept)} keys kept, {len(want)} expected"
    finally:
        store.close()
