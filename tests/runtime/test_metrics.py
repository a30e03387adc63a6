"""The pieces of a worker's ``/metrics`` that need no broker."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from runstate.runtime.metrics import LatencyHistogram, WorkerMetrics
from runstate.runtime.rocksdb_store import RocksDBStore
from runstate.runtime.run_task import TaskCounts


def test_a_histogram_counts_an_observation_in_every_bucket_at_or_above_it() -> None:
    hist = LatencyHistogram(buckets=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        hist.observe(seconds)
    assert hist.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and abs(hist.total - 3.65) < 1e-9


def test_a_rocksdb_store_tells_its_size_without_reading_it(tmp_path: Path) -> None:
    store = RocksDBStore(tmp_path)
    part = store.open(0)
    assert part.size_estimate()[0] == 0
    part.apply([(b"k%d" % i, b"v" * 100) for i in range(500)], changelog_offset=1)
    keys, size = part.size_estimate()
    assert keys == 500 and size > 500 * 100 // 2
    store.close()
    assert part.size_estimate() == (0, 0)


class _View:
    """A worker as the collector sees it, owning no partition."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def owned_partitions(self) -> list[int]:
        return []

    def reading(self, partition: int) -> AbstractContextManager[None]:
        return nullcontext()

    def processed_through(self, partition: int) -> int | None:
        return None

    def consumer_lag(self) -> dict[int, int]:
        return {}

    def restoring_partitions(self) -> frozenset[int]:
        return frozenset()

    def seconds_since_poll(self) -> float:
        return 0.0


def _metrics(worker_id: str, applied: int) -> WorkerMetrics:
    checkpoint = SimpleNamespace(
        commits=1, aborts=0, commit_seconds=LatencyHistogram(), committed_at=None
    )
    return WorkerMetrics(
        _View(worker_id),
        checkpoint=checkpoint,  # type: ignore[arg-type]
        task=TaskCounts(applied=applied, dead_letters={("rejected", "stale_epoch"): 2}),
        restore=SimpleNamespace(),  # type: ignore[arg-type]
    )


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_workers_in_one_process_keep_their_own_figures() -> None:
    first, second = _metrics("w1", applied=3), _metrics("w2", applied=7)
    a, b = _samples(first), _samples(second)
    assert a[("runstate_worker_info", (("worker_id", "w1"),))] == 1
    assert b[("runstate_worker_info", (("worker_id", "w2"),))] == 1
    assert a[("runstate_events_total", (("outcome", "applied"),))] == 3
    assert b[("runstate_events_total", (("outcome", "applied"),))] == 7
    letters = ("runstate_dead_letters_total", (("code", "stale_epoch"), ("reason", "rejected")))
    assert a[letters] == 2 and a[("runstate_events_total", (("outcome", "dead_letter"),))] == 2
    names = {m.name for m in REGISTRY.collect()}
    assert not [n for n in names if n.startswith("runstate_")]
