"""Storage per tier from a workload and the retention policy: the article's "estimate the
volume in advance" as arithmetic, with measured inputs when a cluster is at hand.

Tiers and how each grows:

* **Kafka hot, events**: every event, kept ``hot`` (the events topic has ``retention.ms=-1``
  and is trimmed only by ``retention apply``; without an archive in the policy it grows
  forever).
* **Kafka hot, state changes**: one ``RunStateChanged`` per applied event, kept ``hot``.
* **Changelog**: the processor's compacted table changelog (a run's head, one record per
  collection item and its index keys: about the run's whole state) and the latest-state
  topic (one :class:`~runstate.runs.summary.RunSummary` per run, a few hundred bytes however
  long the run), forever until finished runs are evicted. Before compaction catches up, up
  to ``min.cleanable.dirty.ratio`` more is held; not counted.
* **Archive**: every event again, as compressed segments, kept ``archive_retention``.

Kafka figures are uncompressed payload (key + value + headers) times the replication
factor; the broker's lz4 batches are smaller and record overhead (about 70 bytes per record
batch entry) is larger, so treat them as an upper bound within a factor of two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from runstate.errors import Error
from runstate.retention.backends import ArchiveStore
from runstate.retention.kafka_log import KafkaLog
from runstate.retention.policy import RetentionPolicy, TopicPolicy
from runstate.streams.topics import TopicNames

__all__ = [
    "DEFAULT_ARCHIVE_RATIO",
    "DEFAULT_CHANGE_BYTES",
    "DEFAULT_EVENT_BYTES",
    "DEFAULT_SUMMARY_BYTES",
    "HORIZONS",
    "Measurement",
    "TierEstimate",
    "Workload",
    "default_state_bytes",
    "estimate_storage",
    "measure",
    "total_after",
]

#: Typical encoded event (envelope of ids and times plus a short payload).
DEFAULT_EVENT_BYTES: Final = 350.0
#: A ``RunStateChanged`` record.
DEFAULT_CHANGE_BYTES: Final = 180.0
#: A ``RunSummary`` record (the latest-state topic's): 110-300 bytes, not growing with the run.
DEFAULT_SUMMARY_BYTES: Final = 300.0
#: Archive bytes per Kafka payload byte: deflate over Avro blocks of similar events.
DEFAULT_ARCHIVE_RATIO: Final = 0.35
#: Footprints reported: after a day, a month, a year.
HORIZONS: Final = (("day", 1), ("month", 30), ("year", 365))


def default_state_bytes(events_per_run: float) -> float:
    """A run's encoded state: fixed fields, 8 bytes per remembered event id (at most 128),
    and about 50 bytes per event for the steps, calls and actions it accumulates."""
    return 300.0 + 8.0 * min(events_per_run, 128.0) + 50.0 * events_per_run


@dataclass(frozen=True, slots=True)
class Workload:
    """What the estimate is for.

    Attributes:
        runs_per_day: New runs per day.
        events_per_run: Events per run over its life.
        avg_event_bytes: Mean event payload in Kafka (key + value + headers).
        archive_bytes_per_event: Mean archived bytes per event; by default
            ``avg_event_bytes * DEFAULT_ARCHIVE_RATIO`` (measure it from manifests).
        avg_state_bytes: Mean encoded run state (what the changelog holds per run); by
            default :func:`default_state_bytes`.
        avg_change_bytes: Mean ``RunStateChanged`` record.
        avg_summary_bytes: Mean latest-state record (a run's summary); by default
            :data:`DEFAULT_SUMMARY_BYTES`.
        replication_factor: Copies Kafka keeps of every topic.
    """

    runs_per_day: float
    events_per_run: float
    avg_event_bytes: float = DEFAULT_EVENT_BYTES
    archive_bytes_per_event: float | None = None
    avg_state_bytes: float | None = None
    avg_change_bytes: float = DEFAULT_CHANGE_BYTES
    replication_factor: int = 1
    avg_summary_bytes: float | None = None

    @property
    def events_per_day(self) -> float:
        return self.runs_per_day * self.events_per_run

    @property
    def archived_event_bytes(self) -> float:
        if self.archive_bytes_per_event is not None:
            return self.archive_bytes_per_event
        return self.avg_event_bytes * DEFAULT_ARCHIVE_RATIO

    @property
    def state_bytes(self) -> float:
        if self.avg_state_bytes is not None:
            return self.avg_state_bytes
        return default_state_bytes(self.events_per_run)

    @property
    def summary_bytes(self) -> float:
        return DEFAULT_SUMMARY_BYTES if self.avg_summary_bytes is None else self.avg_summary_bytes


@dataclass(frozen=True, slots=True)
class TierEstimate:
    """One tier: bytes written per day, and how long they are kept (None: forever)."""

    tier: str
    daily_bytes: float
    kept: timedelta | None
    note: str = ""

    def held_after(self, days: float) -> float:
        """Bytes the tier holds ``days`` after the workload started (steady once ``kept``)."""
        window = days if self.kept is None else min(days, self.kept / timedelta(days=1))
        return self.daily_bytes * window

    @property
    def steady_bytes(self) -> float:
        """What the tier levels off at; infinite when nothing is ever deleted."""
        return math.inf if self.kept is None else self.held_after(self.kept / timedelta(days=1))


def estimate_storage(
    workload: Workload, policy: RetentionPolicy | None, names: TopicNames
) -> list[TierEstimate]:
    """Storage per tier for ``workload`` under ``policy`` (None: nothing is ever deleted)."""
    rf = workload.replication_factor
    events = policy.topics.get(names.events) if policy else None
    changes = policy.topics.get(names.state_changes) if policy else None

    held = bool(policy and policy.legal_holds)

    def kafka_window(rules: TopicPolicy | None) -> tuple[timedelta | None, str]:
        if rules is None:
            return None, "no policy: retention.ms=-1, kept forever"
        if not rules.archived and held and rules.hold_archive is None:
            return None, (
                "not archived, no hold_archive and legal holds are active: `retention apply`"
                " keeps it all; add a hold_archive to keep only the held runs' records"
            )
        if not rules.archived and held:
            return rules.hot, (
                "trimmed after hot; held runs' records kept in the hold_archive (not counted)"
            )
        if not rules.archived:
            return rules.hot, "not archived: trimmed after hot, history then gone"
        return rules.hot, "trimmed by `retention apply` after hot, up to the archived watermark"

    hot_kept, hot_note = kafka_window(events)
    changes_kept, changes_note = kafka_window(changes)
    tiers = [
        TierEstimate(
            "kafka hot: events",
            workload.events_per_day * workload.avg_event_bytes * rf,
            hot_kept,
            hot_note,
        ),
        TierEstimate(
            "kafka hot: state changes",
            workload.events_per_day * workload.avg_change_bytes * rf,
            changes_kept,
            changes_note,
        ),
        TierEstimate(
            "changelog + latest state",
            workload.runs_per_day * (workload.state_bytes + workload.summary_bytes) * rf,
            None,
            "compacted: each run's state in the changelog, its summary in the latest-state"
            " topic; counted as kept for ever (the runtime evicts finished runs after"
            " finished_hot, 30 days by default)",
        ),
    ]
    if events is not None and events.archived:
        tiers.append(
            TierEstimate(
                "archive: events",
                workload.events_per_day * workload.archived_event_bytes,
                events.archive_retention,
                "expired by `retention apply` after archive_retention (held runs' records"
                " kept in hold segments, not counted)",
            )
        )
    return tiers


def total_after(tiers: Sequence[TierEstimate], days: float) -> float:
    """Bytes all tiers hold ``days`` after the start."""
    return sum(t.held_after(days) for t in tiers)


@dataclass(frozen=True, slots=True)
class Measurement:
    """Figures measured on a running deployment; None where there was nothing to measure.

    Attributes:
        avg_event_bytes: Mean payload of sampled events (key + value + headers).
        sampled_events: How many events the mean is over.
        archive_bytes_per_event: Archived segment bytes per record, over live manifests.
        archived_records: How many records that is over.
        avg_summary_bytes: Mean payload of sampled latest-state records (run summaries;
            the state itself is spread over many changelog records, so it is not measured).
    """

    avg_event_bytes: float | None = None
    sampled_events: int = 0
    archive_bytes_per_event: float | None = None
    archived_records: int = 0
    avg_summary_bytes: float | None = None

    @property
    def compression_ratio(self) -> float | None:
        """Archive bytes per Kafka payload byte, when both sides were measured."""
        if self.avg_event_bytes and self.archive_bytes_per_event is not None:
            return self.archive_bytes_per_event / self.avg_event_bytes
        return None


def _sample_topic(kafka: KafkaLog, topic: str, limit: int) -> tuple[float | None, int]:
    marks = {p: m for p, m in kafka.watermarks(topic).items() if m[1] > m[0]}
    if not marks:
        return None, 0
    records = payload = 0
    per_partition = max(1, limit // len(marks))
    for partition, (low, _high) in sorted(marks.items()):
        sizes = kafka.sample_sizes(topic, partition, start=low, limit=per_partition)
        records += sizes.records
        payload += sizes.payload_bytes
    return (payload / records if records else None), records


def measure(
    kafka: KafkaLog | None,
    names: TopicNames,
    store: ArchiveStore | None,
    *,
    sample: int = 1000,
) -> tuple[Measurement, list[str]]:
    """Measure event size, archive bytes per event and state size where data exists.

    An unreachable broker or archive is not an error here: the estimate falls back to
    assumed figures, and the returned notes say which and why.
    """
    notes: list[str] = []
    avg_event = avg_summary = None
    sampled = 0
    if kafka is not None:
        try:
            existing = kafka.topics()
            if names.events in existing:
                avg_event, sampled = _sample_topic(kafka, names.events, sample)
            if names.latest_state in existing:
                avg_summary, _ = _sample_topic(kafka, names.latest_state, sample // 4)
            if avg_event is None:
                notes.append(f"{names.events} has no data to measure")
        except Error as exc:
            notes.append(f"Kafka not measured: {exc}")
    archive_per_event = None
    archived = 0
    if store is not None:
        try:
            size = 0
            for partition in store.partitions(names.events):
                for m in store.list_manifests(names.events, partition):
                    if m.is_live:
                        size += m.size_bytes
                        archived += m.record_count
            archive_per_event = size / archived if archived else None
        except Error as exc:
            notes.append(f"archive not measured: {exc}")
            archived = 0
    return Measurement(avg_event, sampled, archive_per_event, archived, avg_summary), notes
