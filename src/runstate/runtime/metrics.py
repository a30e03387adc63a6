"""A worker's ``/metrics`` in the Prometheus text format (docs/metrics.md lists them all).

Nothing here runs on the poll loop. The loop only bumps plain integers (no lock)
(:class:`~runstate.runtime.run_task.TaskCounts`, the checkpoint's counts, the restorer's),
once per checkpoint one :class:`LatencyHistogram` bucket, and twice a second its consumer
lag (:meth:`~runstate.runtime.loop.Worker.consumer_lag`: the consumer's cached end offsets
and its position; the consumer's calls from another thread would wait for ``consume()``).
Everything else is read when Prometheus scrapes, by a collector off the query API's event
loop, from cheap sources:

* store size from RocksDB's own estimates (no data read);
* approvals waiting and overdue from the due index of each owned partition (keys only, at
  most :data:`APPROVALS_COUNT_LIMIT` per partition): never a scan of every run.

Each worker has a registry of its own (:class:`WorkerMetrics`), not the process-wide default
one, so several workers in one process (the tests) never mix their figures.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runstate.runs.keyspace import KeyValueReader
from runstate.runs.run_index import count_approvals
from runstate.runtime.recovery import AssignedRestore, PartitionRestorer

if TYPE_CHECKING:
    from runstate.runtime.checkpoint import Checkpoint
    from runstate.runtime.run_task import TaskCounts
    from runstate.runtime.standby import Standbys

__all__ = [
    "APPROVALS_COUNT_LIMIT",
    "CONTENT_TYPE",
    "WORKER_METRICS",
    "LatencyHistogram",
    "SizedStore",
    "WorkerMetrics",
    "WorkerView",
]

#: ``Content-Type`` of the text exposition format (version 0.0.4).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Pending approvals counted per partition and scrape at most; past it the gauges are floors
#: and ``runstate_approvals_count_capped`` is 1.
APPROVALS_COUNT_LIMIT: Final = 100_000

#: Checkpoint durations (seconds): the interval is 0.1 s; a broker in trouble takes seconds.
CHECKPOINT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Every metric family a worker exports (name -> type), as the examples and docs name them.
WORKER_METRICS: Final = {
    "runstate_worker": "info",
    "runstate_events": "counter",
    "runstate_dead_letters": "counter",
    "runstate_state_changes": "counter",
    "runstate_checkpoints": "counter",
    "runstate_checkpoint_duration_seconds": "histogram",
    "runstate_committed_offset": "gauge",
    "runstate_consumer_lag": "gauge",
    "runstate_partitions": "gauge",
    "runstate_restore_records": "counter",
    "runstate_restores": "counter",
    "runstate_restore_records_done": "gauge",
    "runstate_restore_remaining_offsets": "gauge",
    "runstate_standby_records": "counter",
    "runstate_store_keys": "gauge",
    "runstate_store_bytes": "gauge",
    "runstate_approvals_waiting": "gauge",
    "runstate_approvals_overdue": "gauge",
    "runstate_approvals_count_capped": "gauge",
    "runstate_seconds_since_poll": "gauge",
    "runstate_seconds_since_commit": "gauge",
}


@dataclass
class LatencyHistogram:
    """Cumulative-bucket histogram bumped from one thread (the loop) without a lock: one
    ``bisect`` and two additions per observation. A scrape reading it meanwhile may see one
    observation counted in ``count`` and not yet in ``sum``; Prometheus tolerates that."""

    buckets: Sequence[float] = CHECKPOINT_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        running = 0
        out: list[tuple[str, float]] = []
        for bound, n in zip([*map(str, self.buckets), "+Inf"], list(self.counts), strict=True):
            running += n
            out.append((bound, running))
        return out


@runtime_checkable
class SizedStore(Protocol):
    """A partition store that can tell its size without reading its data."""

    def size_estimate(self) -> tuple[int, int]:
        """``(keys, bytes)``."""
        ...


class WorkerView(Protocol):
    """What the collector reads of its worker (:class:`~runstate.runtime.loop.Worker`)."""

    @property
    def worker_id(self) -> str: ...

    def owned_partitions(self) -> list[int]: ...

    def reading(self, partition: int) -> AbstractContextManager[KeyValueReader | None]: ...

    def processed_through(self, partition: int) -> int | None: ...

    def consumer_lag(self) -> dict[int, int]:
        """Records of each owned partition not yet consumed (from cached end offsets)."""
        ...

    def restoring_partitions(self) -> frozenset[int]: ...

    def seconds_since_poll(self) -> float: ...


class WorkerMetrics(Collector):
    """The collector of one worker, in a registry of its own; :meth:`exposition` is the body
    of ``GET /metrics``."""

    def __init__(
        self,
        worker: WorkerView,
        *,
        checkpoint: Checkpoint,
        task: TaskCounts,
        restore: PartitionRestorer,
        standbys: Standbys | None = None,
        clock: type[datetime] = datetime,
    ) -> None:
        self._worker = worker
        self._checkpoint = checkpoint
        self._task = task
        self._restore = restore
        self._standbys = standbys
        self._clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def exposition(self) -> bytes:
        """The text format of every metric, computed now."""
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        yield from self._counts()
        yield from self._partitions()
        yield from self._restores()
        yield from self._stores_and_approvals()

    # -- what the loop counts ---------------------------------------------------------------
    def _counts(self) -> Iterator[Metric]:
        w, task, cp = self._worker, self._task, self._checkpoint
        info = InfoMetricFamily("runstate_worker", "This worker's identity.")
        info.add_metric([], {"worker_id": w.worker_id})
        yield info
        events = CounterMetricFamily(
            "runstate_events",
            "Records of the events topic handled, by outcome (redone ones after an aborted"
            " checkpoint count again).",
            labels=["outcome"],
        )
        dead = dict(task.dead_letters)
        events.add_metric(["applied"], task.applied)
        events.add_metric(["duplicate"], task.duplicates)
        events.add_metric(["dead_letter"], sum(dead.values()))
        yield events
        letters = CounterMetricFamily(
            "runstate_dead_letters",
            "Records set aside to the dead-letter topic, by reason and error class or code.",
            labels=["reason", "code"],
        )
        for (reason, code), n in sorted(dead.items()):
            letters.add_metric([reason, code], n)
        yield letters
        yield CounterMetricFamily(
            "runstate_state_changes",
            "RunStateChanged records emitted to the state-changes topic.",
            value=task.applied,
        )
        checkpoints = CounterMetricFamily(
            "runstate_checkpoints",
            "Checkpoints (one Kafka transaction each), by result.",
            labels=["result"],
        )
        checkpoints.add_metric(["committed"], cp.commits)
        checkpoints.add_metric(["aborted"], cp.aborts)
        yield checkpoints
        hist = cp.commit_seconds
        duration = HistogramMetricFamily(
            "runstate_checkpoint_duration_seconds",
            "Time of one checkpoint that committed something: produce the changelog, flush,"
            " send offsets, commit the transaction, apply to the stores.",
        )
        duration.add_metric([], hist.cumulative(), sum_value=hist.total)
        yield duration
        standby = CounterMetricFamily(
            "runstate_standby_records", "Changelog records applied to standby replicas."
        )
        standby.add_metric([], 0 if self._standbys is None else self._standbys.records)
        yield standby
        yield GaugeMetricFamily(
            "runstate_seconds_since_poll",
            "Seconds since the loop last polled Kafka (a stalled loop grows it).",
            value=w.seconds_since_poll(),
        )
        at = cp.committed_at
        since = GaugeMetricFamily(
            "runstate_seconds_since_commit",
            "Seconds since the last checkpoint that committed something.",
        )
        if at is not None:
            since.add_metric([], max(0.0, time.time() - at))
        yield since

    # -- read at scrape time ------------------------------------------------------------------
    def _partitions(self) -> Iterator[Metric]:
        w = self._worker
        owned = w.owned_partitions()
        states = GaugeMetricFamily(
            "runstate_partitions",
            "Partitions of the events topic on this worker, by state.",
            labels=["state"],
        )
        states.add_metric(["active"], len(owned))
        states.add_metric(["restoring"], len(w.restoring_partitions()))
        standbys = self._standbys
        states.add_metric(["standby"], 0 if standbys is None else len(standbys.partitions))
        yield states
        committed = GaugeMetricFamily(
            "runstate_committed_offset",
            "Last offset of the partition whose effects are committed.",
            labels=["partition"],
        )
        for p in owned:
            done = w.processed_through(p)
            if done is not None:
                committed.add_metric([str(p)], done)
        yield committed
        lag = GaugeMetricFamily(
            "runstate_consumer_lag",
            "Records of the partition not yet consumed: its end (last stable offset) minus"
            " the worker's position.",
            labels=["partition"],
        )
        for p, n in sorted(w.consumer_lag().items()):
            lag.add_metric([str(p)], n)
        yield lag

    def _restores(self) -> Iterator[Metric]:
        restore = self._restore
        assigned = restore if isinstance(restore, AssignedRestore) else None
        yield CounterMetricFamily(
            "runstate_restore_records",
            "Changelog records applied by restores of assigned partitions.",
            value=0 if assigned is None else assigned.records_restored,
        )
        yield CounterMetricFamily(
            "runstate_restores",
            "Restores of assigned partitions finished.",
            value=0 if assigned is None else assigned.restores,
        )
        done = GaugeMetricFamily(
            "runstate_restore_records_done",
            "Records applied so far by a restore under way.",
            labels=["partition"],
        )
        left = GaugeMetricFamily(
            "runstate_restore_remaining_offsets",
            "Changelog offsets a restore under way has still to read (an upper bound of records).",
            labels=["partition"],
        )
        progress = {} if assigned is None else assigned.progress()
        for p, r in sorted(progress.items()):
            done.add_metric([str(p)], r.records)
            if r.remaining is not None:
                left.add_metric([str(p)], r.remaining)
        yield done
        yield left

    def _stores_and_approvals(self) -> Iterator[Metric]:
        w = self._worker
        keys = GaugeMetricFamily(
            "runstate_store_keys",
            "Keys in the partition's store (RocksDB's estimate): run heads, collection"
            " entries and index keys together.",
            labels=["partition"],
        )
        size = GaugeMetricFamily(
            "runstate_store_bytes",
            "Bytes of the partition's store (RocksDB: SST files and memtables).",
            labels=["partition"],
        )
        now = self._clock.now(UTC)
        waiting = overdue = 0
        capped = False
        for p in w.owned_partitions():
            with w.reading(p) as reader:
                if reader is None:
                    continue
                if isinstance(reader, SizedStore):
                    n_keys, n_bytes = reader.size_estimate()
                    keys.add_metric([str(p)], n_keys)
                    size.add_metric([str(p)], n_bytes)
                counts = count_approvals(reader, now, limit=APPROVALS_COUNT_LIMIT)
            waiting += counts.waiting
            overdue += counts.overdue
            capped = capped or counts.capped
        yield keys
        yield size
        yield GaugeMetricFamily(
            "runstate_approvals_waiting",
            "Approvals pending in the partitions this worker owns.",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "runstate_approvals_overdue",
            "Of those, the approvals past their due time.",
            value=overdue,
        )
        yield GaugeMetricFamily(
            "runstate_approvals_count_capped",
            f"1 if a partition held more than {APPROVALS_COUNT_LIMIT} pending approvals: the"
            " approval gauges are then floors.",
            value=int(capped),
        )
