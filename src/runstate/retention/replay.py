"""Compliance replay: rebuild run state from the archive and Kafka with the live reducer.

History of a partition is read in two parts: the archive's segments (through their
manifests, checksums checked) from offset 0 as far as they are contiguous, then Kafka from
the first offset the archive lacks. The boundary is checked, never assumed: Kafka's earliest
offset must be at or below the archive's end, and the first Kafka record read must be the
archive's ``last_offset + 1``; otherwise :class:`ReplayError` names the missing offsets.
Segments deleted by retention (tombstones) are skipped and reported: their history is gone
by policy, not by accident. A tombstone whose held runs' records live on in a hold segment
is read through that hold segment (same range, original offsets), so a run under legal
hold replays whole after everything around it expired.

Every value is decoded into the current event classes whatever schema version wrote it
(Avro resolution in the codec), and folded with :func:`runstate.runs.reducer.apply`,
the function the live processor runs, with the original offsets, so a replayed state is
field for field what the processor kept (``last_offset`` included). Every record first goes
through the live processor's intake (:func:`runstate.runs.intake.read_record`): a record
the processor dead-letters (no value, oversize, no key, undecodable, unknown schema, keyed by
another run than its event names) is set aside here too and counted by reason, never
applied. So a run's offsets all come from its own partition, and no state is rebuilt from a
record the live processor refused.

``--at TIME`` stops each run at its first event after TIME (log order wins, as
:func:`~runstate.runs.reducer.fold` does), so the answer is the state a query at TIME
would have seen, give or take producers' clock skew.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from runstate.errors import ReplayError
from runstate.retention.backends import ArchiveStore
from runstate.retention.holds import archive_chain
from runstate.retention.kafka_log import KafkaLog
from runstate.retention.manifest import SegmentManifest
from runstate.runs.dead_letters import DeadLetter, SourceRecord
from runstate.runs.intake import read_record
from runstate.runs.reducer import Applied, Duplicate, Outcome, apply
from runstate.runs.state import RunState
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.partitioning import partition_for

__all__ = [
    "HistoryRecord",
    "HistorySource",
    "PartitionSpan",
    "ProgressSink",
    "ReplayResult",
    "ReplayStats",
    "plan_partition",
    "replay_all",
    "replay_until",
]

Origin = Literal["archive", "kafka"]


class ProgressSink(Protocol):
    """Where replay reports progress (the CLI's rich progress bar; benchmarks' counters)."""

    def total(self, records: int) -> None:
        """Records the replay will read, known before the first is read."""
        ...

    def advance(self, records: int) -> None:
        """``records`` more were read."""
        ...


@dataclass(frozen=True)
class HistorySource:
    """Where a topic's history lives: its archive, and Kafka for the rest.

    Args:
        store: The topic's archive.
        kafka: Watermarks of the topic, and its records past the archive (read up to the
            end offset seen when the replay started).
        bootstrap_servers: Where ``kafka`` reads from (the CLI reads the live state there).
        topic: The events topic.
        codec: Decodes values (give it the schemas topic as writer source, so values from
            producers newer than this code still decode).
        max_event_bytes: The live processor's size limit (``RUNSTATE_MAX_EVENT_BYTES``):
            larger records were dead-lettered live, so replay sets them aside too.
    """

    store: ArchiveStore
    kafka: KafkaLog
    bootstrap_servers: str
    topic: str
    codec: SingleObjectCodec
    max_event_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One record of history, from the archive or from Kafka."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    origin: Origin


@dataclass(frozen=True)
class PartitionSpan:
    """How a partition's history is split between archive and Kafka.

    Attributes:
        segments: Archive manifests read, in order (tombstones included, not read).
        archive_end: First offset not in the archive chain (0 when nothing is archived).
        kafka_low: Kafka's earliest offset when the replay started.
        kafka_end: Kafka's end offset when the replay started; the replay stops there.
        expired: Offset ranges deleted by retention (tombstones), skipped.
        held: Offset ranges of which only held runs' records remain (hold segments).
    """

    partition: int
    segments: tuple[SegmentManifest, ...]
    archive_end: int
    kafka_low: int
    kafka_end: int
    expired: tuple[tuple[int, int], ...] = ()
    held: tuple[tuple[int, int], ...] = ()

    @property
    def records(self) -> int:
        """Records the replay reads (archive per manifests, Kafka per offsets)."""
        archived = sum(m.record_count for m in self.segments if m.is_live)
        return archived + max(0, self.kafka_end - self.archive_end)


def plan_partition(
    manifests: list[SegmentManifest],
    partition: int,
    *,
    kafka_low: int,
    kafka_end: int,
    topic: str = "",
) -> PartitionSpan:
    """Split a partition's history between archive and Kafka, or say what is missing.

    Args:
        manifests: The partition's manifests as :func:`~runstate.retention.holds.archive_chain`
            returns them (hold segments in their tombstones' place).

    Raises:
        ReplayError: two segments overlap, or offsets between the archive's end and
            Kafka's earliest offset are in neither; the message names the offsets.
    """
    position = 0
    chain: list[SegmentManifest] = []
    for m in sorted(manifests, key=lambda m: m.first_offset):
        if m.first_offset > position:
            break  # a gap: Kafka must supply everything from here
        if m.first_offset < position:
            raise ReplayError(
                f"archive segments of {topic}/{partition} overlap at offsets {m.first_offset}.."
                f"{min(position - 1, m.last_offset)}; run `runstate archive verify` and remove"
                " the wrong segment"
            )
        chain.append(m)
        position = m.last_offset + 1
    if kafka_low > position:
        raise ReplayError(
            f"offsets {position}..{kafka_low - 1} of {topic}/{partition} are neither archived"
            f" nor in Kafka (earliest offset {kafka_low}); history cannot be rebuilt past them."
            " Restore the missing segments, then replay again"
        )
    expired = tuple(m.offsets for m in chain if not m.is_live)
    held = tuple(m.offsets for m in chain if m.is_hold)
    return PartitionSpan(partition, tuple(chain), position, kafka_low, kafka_end, expired, held)


@dataclass
class ReplayStats:
    """Counts and timing of one replay; ``events_per_s`` is the replay rate."""

    archive_records: int = 0
    kafka_records: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    #: Records the live processor dead-letters at intake, by reason (``rs-reason``).
    set_aside: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def records(self) -> int:
        return self.archive_records + self.kafka_records

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def events_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class ReplayResult:
    """States rebuilt by a replay, and how the history was read.

    Attributes:
        states: Run id -> state at the replay's point in time.
        spans: Per partition, what came from the archive and what from Kafka.
        partitions: Partition count of the topic (to place a run in its partition).
        problems: Records set aside at intake, with where and why; the first 100.
    """

    states: dict[str, RunState]
    spans: dict[int, PartitionSpan]
    partitions: int
    stats: ReplayStats
    problems: list[str] = field(default_factory=list)


def _spans(source: HistorySource, partitions: list[int] | None) -> dict[int, PartitionSpan]:
    marks = source.kafka.watermarks(source.topic)
    chosen = sorted(marks) if partitions is None else partitions
    return {
        p: plan_partition(
            archive_chain(
                source.store.list_manifests(source.topic, p),
                source.store.list_hold_manifests(source.topic, p),
            ),
            p,
            kafka_low=marks[p][0],
            kafka_end=marks[p][1],
            topic=source.topic,
        )
        for p in chosen
    }


def iter_history(
    source: HistorySource,
    span: PartitionSpan,
    *,
    run_id: str | None = None,
    progress: ProgressSink | None = None,
) -> Iterator[HistoryRecord]:
    """A partition's records in offset order: the archive chain, then Kafka.

    With ``run_id``, segments whose manifests do not list the run are not read, and only
    that run's records are yielded (progress still counts skipped segments' records).

    Raises:
        ArchiveError: a segment is missing or damaged.
        ReplayError: records break offset order, or Kafka does not continue where the
            archive ends.
    """
    key = run_id.encode() if run_id is not None else None
    topic, partition = source.topic, span.partition
    last = -1
    for m in span.segments:
        if not m.is_live:
            last = m.last_offset
            continue
        if key is not None and run_id not in source.store.run_ids(m):
            if progress is not None:
                progress.advance(m.record_count)
            last = m.last_offset
            continue
        count = 0
        for r in source.store.read_segment(m):
            if r.offset <= last or not m.first_offset <= r.offset <= m.last_offset:
                raise ReplayError(
                    f"{m.segment_name}: record offset {r.offset} out of order or outside"
                    f" {m.first_offset}..{m.last_offset}; run `runstate archive verify`"
                )
            last = r.offset
            count += 1
            if key is None or r.key == key:
                yield HistoryRecord(partition, r.offset, r.timestamp_ms, r.key, r.value, "archive")
        last = m.last_offset
        if progress is not None:
            progress.advance(count)
    if span.archive_end >= span.kafka_end:
        return
    first = True
    pending = 0
    for raw in source.kafka.read_records(
        topic, partition, start=span.archive_end, end=span.kafka_end
    ):
        if first and raw.offset != span.archive_end:
            raise ReplayError(
                f"{topic}/{partition}: the archive ends at offset {span.archive_end - 1} but the"
                f" first record Kafka returned is {raw.offset}; offsets {span.archive_end}.."
                f"{raw.offset - 1} are missing (trimmed while replaying?)"
            )
        first = False
        pending += 1
        if progress is not None and pending >= 1000:
            progress.advance(pending)
            pending = 0
        if key is None or raw.key == key:
            yield HistoryRecord(
                partition, raw.offset, raw.timestamp_ms, raw.key, raw.value, "kafka"
            )
    if progress is not None and pending:
        progress.advance(pending)


#: Called for each decoded event of the replay with the outcome (the timeline's hook).
EventObserver = Callable[[HistoryRecord, AgentEvent, Outcome], None]


def replay_all(
    source: HistorySource,
    *,
    at: datetime | None = None,
    run_id: str | None = None,
    partitions: list[int] | None = None,
    progress: ProgressSink | None = None,
    observe: EventObserver | None = None,
) -> ReplayResult:
    """Rebuild every run's state (or one run's) from the archive and Kafka.

    Args:
        source: Archive, Kafka and codec of the events topic.
        at: Each run's state as of this time (its events up to the first one after it).
        run_id: Only this run: only its partition is read, only segments listing it.
        partitions: Only these partitions (ignored with ``run_id``).
        progress: Told the total, then every batch read.
        observe: Called with each decoded event and the reducer's outcome.

    Returns:
        The states and the statistics.

    Raises:
        ReplayError: a gap between archive and Kafka, or records out of order.
        ArchiveError: a segment is missing or damaged.
    """
    marks = source.kafka.watermarks(source.topic)
    count = len(marks)
    if run_id is not None:
        partitions = [partition_for(run_id.encode(), count)]
    spans = _spans(source, partitions)
    if progress is not None:
        progress.total(sum(s.records for s in spans.values()))
    stats = ReplayStats()
    result = ReplayResult({}, spans, count, stats)
    states = result.states
    stopped: set[str] = set()
    decode = functools.partial(decode_event, codec=source.codec)
    for span in spans.values():
        for record in iter_history(source, span, run_id=run_id, progress=progress):
            if record.origin == "archive":
                stats.archive_records += 1
            else:
                stats.kafka_records += 1
            item = read_record(
                SourceRecord(
                    source.topic, record.partition, record.offset, record.key, record.value
                ),
                decode=decode,
                max_event_bytes=source.max_event_bytes,
            )
            if isinstance(item, DeadLetter):
                stats.set_aside[item.reason.value] += 1
                if len(result.problems) < 100:
                    result.problems.append(
                        f"{source.topic}[{record.partition}]@{record.offset}:"
                        f" {item.reason.value}: {item.detail}"
                    )
                continue
            event = item
            run = event.run_id
            if at is not None and (run in stopped or event.occurred_at > at):
                stopped.add(run)
                continue
            outcome = apply(states.get(run), event, offset=record.offset)
            if isinstance(outcome, Applied):
                states[run] = outcome.state
                stats.applied += 1
            elif isinstance(outcome, Duplicate):
                stats.duplicates += 1
            else:
                stats.rejected += 1
            if observe is not None:
                observe(record, event, outcome)
    stats.finished = time.monotonic()
    return result


def replay_until(
    ts: datetime,
    source: HistorySource,
    *,
    run_id: str | None = None,
    progress: ProgressSink | None = None,
) -> ReplayResult:
    """Every run's state (or one run's) as of ``ts``; see :func:`replay_all`."""
    return replay_all(source, at=ts, run_id=run_id, progress=progress)
