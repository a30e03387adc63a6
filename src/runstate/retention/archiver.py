"""The archiver: a Kafka consumer group that copies a topic into archive segments.

Every offset of the topic must land in the archive exactly once, whatever happens to the
archiver (``kill -9`` between any two lines, a rebalance, a store outage). Three rules give
that:

* **The store is the source of truth for where to resume.** On assignment the archiver
  reads the partition's published ranges and starts at the first offset at or after Kafka's
  earliest one that no manifest covers (:func:`resume_point`). The committed consumer offset
  is only a progress signal for lag monitoring: a segment may be published and the process
  killed before the commit, and resuming from the commit would archive it twice.
* **Segments never overlap published ones.** Published ranges above the resume point (a
  partition whose archive has a hole) are fences: a segment is cut right before a fence and
  the consumer jumps past it. :meth:`BlobArchive.put_segment` refuses overlaps as well, so a
  second archiver fighting over a partition fails loudly instead of doubling offsets.
* **Commit after durability.** The Kafka offset is committed only after ``put_segment``
  returned, i.e. after segment and manifest are durable.

* **Exactly the next offset.** A partition accepts only the message at the offset it expects
  next. Anything below was archived already; anything above is either left over from before
  a ``seek`` (prefetched, and delivered after it: bug F4) and ignored, or a hole the broker
  confirms has no readable record (transaction markers, compaction; see
  :mod:`runstate.retention.offset_gaps`). Right before publishing, the segment is checked
  once more: its records must start at its first offset and leave no unproven hole, or it is
  dropped and the partition resumes from the store.

A segment covers a contiguous range ``[first, last]``, which may include proven holes, so
transaction markers between records do not look like gaps. Segments roll at
``roll_records`` records, ``roll_bytes`` payload bytes or ``roll_seconds`` after their first
record, whichever comes first.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from runstate.errors import ArchiveError, DecodeError
from runstate.retention.backends import ArchiveStore
from runstate.retention.masking import EventMasker
from runstate.retention.offset_gaps import (
    KafkaOffsetProbe,
    OffsetProbe,
    ProvenGaps,
    first_unproven_hole,
)
from runstate.retention.segment import ArchivedRecord, RecordMask, build_segment
from runstate.schemas.catalog import SchemaVersion
from runstate.schemas.codec import SingleObjectCodec
from runstate.streams import clients

__all__ = [
    "Archiver",
    "ArchiverConfig",
    "ArchiverStats",
    "decode_archived_value",
    "resume_point",
    "writer_schema_mask",
]

log = logging.getLogger(__name__)

_HEADER: Final = 10  # C3 01 + 8-byte fingerprint

#: How often the archiver notes its partitions' ends for ``/metrics`` (seconds).
END_INTERVAL_S: Final = 0.5


def resume_point(
    ranges: Iterable[tuple[int, int]], earliest: int
) -> tuple[int, list[tuple[int, int]]]:
    """Where archiving a partition resumes, and the published ranges still ahead of it.

    Args:
        ranges: Published ``(first, last)`` offset ranges of the partition (tombstones
            included: their offsets were archived once and must not be archived again).
        earliest: Kafka's earliest offset of the partition; nothing below it can be read.

    Returns:
        ``(position, fences)``: the first offset at or after ``earliest`` that no range
        covers, and the ranges starting above it, in order. The archiver must not write
        into a fence; it cuts its segment before one and continues after it.
    """
    position = earliest
    ordered = sorted(ranges)
    fences: list[tuple[int, int]] = []
    for first, last in ordered:
        if last < position:
            continue
        if first <= position and not fences:
            position = last + 1
        else:
            fences.append((first, last))
    return position, fences


def _decode_with_writer_schema(
    codec: SingleObjectCodec, value: bytes, *, offset: int | None
) -> tuple[SchemaVersion, dict[str, Any]]:
    if len(value) < _HEADER or value[:2] != b"\xc3\x01":
        raise DecodeError(
            "not single-object encoded; cannot check it for personal data", offset=offset
        )
    schema, _local = codec.writer_schema(value[2:_HEADER], offset=offset)
    try:
        fields = fastavro.schemaless_reader(io.BytesIO(value[_HEADER:]), schema.parsed, None)
    except Exception as exc:  # fastavro raises bare EOF/Index/Value errors on damage
        raise DecodeError(f"corrupt {schema.name} body: {exc}", offset=offset) from exc
    if not isinstance(fields, dict):
        raise DecodeError(f"{schema.name} is not a record", offset=offset)
    return schema, fields


def decode_archived_value(
    codec: SingleObjectCodec, value: bytes, *, offset: int | None = None
) -> tuple[str, dict[str, Any]]:
    """``(event type, fields)`` of an archived value, read with its own writer schema.

    Reading with the writer schema shows every field the value holds, including fields of
    versions newer than this code, which is what a search for personal data must see.

    Raises:
        UnknownSchema: the writer schema is neither local nor on the schemas topic.
        DecodeError: the value is not single-object encoded or its body is corrupt.
    """
    schema, fields = _decode_with_writer_schema(codec, value, offset=offset)
    return schema.name, fields


def writer_schema_mask(masker: EventMasker, codec: SingleObjectCodec) -> RecordMask:
    """A record mask that decodes each value with its own writer schema and re-encodes it.

    Reading with the writer schema (not the newest local version) makes masking lossless: a
    value from an older producer keeps its version, and one from a newer producer keeps the
    fields this code does not know. Values the masker does not change keep their bytes.

    Raises (from the returned function):
        UnknownSchema: the writer schema is neither local nor on the schemas topic;
            archiving stops rather than store a value it could not check for personal data.
        DecodeError: the value is not single-object encoded or its body is corrupt.
    """

    def apply(record: ArchivedRecord) -> ArchivedRecord:
        value = record.value
        if value is None:
            return record
        schema, fields = _decode_with_writer_schema(codec, value, offset=record.offset)
        masked = masker(schema.name, fields)
        if masked == fields:
            return record
        return replace(record, value=codec.encode(masked, schema))

    return apply


@dataclass(frozen=True, slots=True)
class ArchiverConfig:
    """How one archiver consumes and when it rolls segments.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers.
        topic: The topic to archive.
        group_id: Consumer group; archivers of one topic share it and split its partitions.
        roll_records: Close a segment at this many records.
        roll_bytes: ... or at this many key + value bytes buffered.
        roll_seconds: ... or this long after its first record, so a quiet topic is still
            archived (and can be trimmed) within bounded time.
        poll_timeout_s: Longest wait in one poll; bounds how late a time-based roll is.
        instance_id: Static group membership (``group.instance.id``): a restarted archiver
            with the same id gets its partitions back at once instead of after the session
            timeout. Two live archivers must not share one.
        session_timeout_ms: How long a crashed member keeps its partitions.
        retry_backoff_s: Pause after a failed publish before resuming from the store.
    """

    bootstrap_servers: str
    topic: str
    group_id: str
    roll_records: int = 10_000
    roll_bytes: int = 32 * 1024 * 1024
    roll_seconds: float = 60.0
    poll_timeout_s: float = 0.5
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    retry_backoff_s: float = 2.0

    def consumer_config(self) -> dict[str, Any]:
        """librdkafka settings: manual commits, committed reads, EOF events for ``--once``."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": self.session_timeout_ms,
        }
        if self.instance_id:
            config["group.instance.id"] = self.instance_id
        return config


@dataclass
class ArchiverStats:
    """What one :meth:`Archiver.run` did; ``records_per_s`` is the archive throughput."""

    records: int = 0
    segments: int = 0
    segment_bytes: int = 0
    payload_bytes: int = 0
    failed_puts: int = 0
    started: float = field(default_factory=time.monotonic)
    #: When the first record arrived: the rate excludes joining the group and idle time.
    first_record: float | None = None
    finished: float | None = None

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def records_per_s(self) -> float:
        """Records archived per second since the first record arrived."""
        busy = (self.finished or time.monotonic()) - (self.first_record or self.started)
        return self.records / busy if busy > 0 else 0.0


@dataclass
class _Partition:
    """One assigned partition: where the open segment starts and what it holds."""

    start: int  # first offset the open segment covers
    fences: list[tuple[int, int]]
    records: list[ArchivedRecord] = field(default_factory=list)
    upto: int = 0  # the next offset to accept: after the last record or proven hole
    payload: int = 0
    opened_at: float = 0.0
    at_eof: bool = False
    gaps: ProvenGaps = field(default_factory=ProvenGaps)
    #: Sought back in this consumer batch: the batch's later messages were fetched before.
    rewound: bool = False


class Archiver:
    """Copies one topic into an archive store, partition by partition (see module doc).

    Args:
        config: Consumer and rolling settings.
        store: Where segments go.
        mask: Personal-data mask applied to every record (``writer_schema_mask``), or None.
        consumer_factory: Builds the consumer from its config (tests may wrap it).
        probe_factory: Builds the probe that confirms holes in the offsets with the broker
            (default: :class:`KafkaOffsetProbe` with a consumer of its own).
    """

    def __init__(
        self,
        config: ArchiverConfig,
        store: ArchiveStore,
        *,
        mask: RecordMask | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = clients.consumer,
        probe_factory: Callable[[ArchiverConfig], OffsetProbe] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.mask = mask
        self._consumer_factory = consumer_factory
        self._probe_factory = probe_factory or _kafka_probe
        self._probe: OffsetProbe | None = None
        self._parts: dict[int, _Partition] = {}
        self._consumer: Consumer | None = None
        self.stats = ArchiverStats()
        self._once = False
        #: partition -> its end as the consumer last heard of it (noted by the loop at most
        #: every END_INTERVAL_S; ``/metrics`` reads it): replaced whole, never changed in place
        self.ends: dict[int, int] = {}
        self._ends_due = 0.0

    def watermarks(self) -> dict[int, int]:
        """Per assigned partition, the first offset the archive does not hold yet (every
        offset below it is in a published segment). Safe from another thread."""
        return {p: state.start for p, state in list(self._parts.items())}

    # -- assignment ------------------------------------------------------------------------
    def _resume(self, consumer: Consumer, partition: int) -> _Partition:
        """The partition's resume state, from the store (see :func:`resume_point`)."""
        tp = TopicPartition(self.config.topic, partition)
        low, _high = consumer.get_watermark_offsets(tp, timeout=10.0)
        manifests = self.store.list_manifests(self.config.topic, partition)
        position, fences = resume_point((m.offsets for m in manifests), int(low))
        committed = consumer.committed([tp], timeout=10.0)[0].offset
        if committed is not None and committed > position:
            log.warning(
                "%s/%s: committed offset %s is ahead of the archive (%s); archiving from %s,"
                " the archive decides",
                self.config.topic,
                partition,
                committed,
                self.store.location,
                position,
            )
        log.info(
            "%s/%s: archiving from offset %s (fences %s)",
            self.config.topic,
            partition,
            position,
            fences[:3],
        )
        return _Partition(start=position, fences=fences, upto=position)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            state = self._resume(consumer, tp.partition)
            self._parts[tp.partition] = state
            tp.offset = state.start
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in self._parts:
                try:
                    self._flush(tp.partition)
                except ArchiveError as exc:
                    # Harmless: the next owner resumes from the store, which lacks this range.
                    log.warning(
                        "dropping the open segment of %s/%s on revoke: %s",
                        self.config.topic,
                        tp.partition,
                        exc,
                    )
                self._parts.pop(tp.partition, None)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._parts.pop(tp.partition, None)
        consumer.unassign()

    # -- segments --------------------------------------------------------------------------
    def _flush(self, partition: int, *, upto: int | None = None) -> None:
        """Publish the open segment, then commit; ``upto`` cuts it before a fence."""
        state = self._parts[partition]
        if not state.records:
            return
        end = (upto if upto is not None else state.upto) - 1
        hole = first_unproven_hole(state.start, (r.offset for r in state.records), end, state.gaps)
        if hole is not None:
            raise ArchiveError(
                f"refusing to publish {self.config.topic}/{partition} {state.start}-{end}:"
                f" offsets {hole[0]}..{hole[1]} are neither records nor a hole the broker"
                f" confirmed; dropping the segment and resuming from {self.store.location}"
            )
        segment = build_segment(
            self.config.topic,
            partition,
            state.records,
            first_offset=state.start,
            last_offset=end,
            mask=self.mask,
        )
        self.store.put_segment(segment)  # durable when it returns
        self.stats.records += len(state.records)
        self.stats.segments += 1
        self.stats.segment_bytes += segment.manifest.size_bytes
        self.stats.payload_bytes += state.payload
        state.start = end + 1
        state.upto = max(state.upto, state.start)
        state.records = []
        state.payload = 0
        state.gaps.forget_below(state.start)
        consumer = self._consumer
        if consumer is not None:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.config.topic, partition, end + 1)],
                    asynchronous=False,
                )
            except KafkaException as exc:
                # The store already holds the segment; a lost commit only shows as lag.
                log.warning(
                    "commit of %s/%s@%s failed: %s", self.config.topic, partition, end + 1, exc
                )

    def _resync(self, consumer: Consumer, partition: int) -> None:
        """Drop the open segment and resume the partition from the store again."""
        state = self._resume(consumer, partition)
        self._parts[partition] = state
        self._rewind(consumer, partition, state)

    def _rewind(self, consumer: Consumer, partition: int, state: _Partition) -> None:
        """Fetch the partition again from the next offset it expects.

        Messages of the current batch were fetched before this ``seek`` and still arrive
        after it; ``rewound`` makes :meth:`_is_next` ignore those above the expected offset.
        """
        consumer.seek(TopicPartition(self.config.topic, partition, state.upto))
        state.rewound = True

    def _hole_proven(self, partition: int, low: int, high: int) -> bool:
        """Whether the broker has no readable record in ``[low, high)`` (``high`` is one)."""
        if self._probe is None:
            self._probe = self._probe_factory(self.config)
        found = self._probe.next_readable(partition, low)
        return found is not None and found >= high

    def _is_next(self, consumer: Consumer, partition: int, state: _Partition, offset: int) -> bool:
        """Whether ``offset`` (a record, or an end-of-partition position) comes next.

        Accepting only the expected offset, or the first one after a proven hole, makes
        skipping or doubling an offset impossible whatever order messages arrive in.
        """
        expected = state.upto
        if offset == expected:
            return True
        if offset < expected or state.rewound:
            # already archived or in the open segment; or fetched before a seek
            log.debug(
                "%s/%s: ignoring offset %s, expecting %s",
                self.config.topic,
                partition,
                offset,
                expected,
            )
            return False
        if self._hole_proven(partition, expected, offset):
            log.info(
                "%s/%s: no readable record at offsets %s..%s (transaction markers or compaction)",
                self.config.topic,
                partition,
                expected,
                offset - 1,
            )
            state.gaps.add(expected, offset)
            return True
        log.warning(
            "%s/%s: offset %s arrived while %s is next and readable; fetching again from %s",
            self.config.topic,
            partition,
            offset,
            expected,
            expected,
        )
        self._rewind(consumer, partition, state)
        return False

    def _safe_flush(self, consumer: Consumer, partition: int, *, upto: int | None = None) -> bool:
        try:
            self._flush(partition, upto=upto)
            return True
        except ArchiveError as exc:
            self.stats.failed_puts += 1
            log.error(
                "publishing %s/%s failed: %s; retrying from the store in %.1fs",
                self.config.topic,
                partition,
                exc,
                self.config.retry_backoff_s,
            )
            time.sleep(self.config.retry_backoff_s)
            self._resync(consumer, partition)
            return False

    def _take(self, consumer: Consumer, msg: Message) -> None:
        partition = msg.partition() or 0
        state = self._parts.get(partition)
        if state is None:
            return  # revoked while the message was in flight
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
            end = msg.offset() or 0
            if end < state.upto and not state.rewound:
                state.at_eof = True  # nothing left to read past what we hold
            elif end >= state.upto and self._is_next(consumer, partition, state, end):
                state.upto = end
                state.at_eof = True
            return
        offset = msg.offset() or 0
        if not self._is_next(consumer, partition, state, offset):
            return
        while state.fences and offset >= state.fences[0][0]:
            fence_first, fence_last = state.fences.pop(0)
            if state.records and not self._safe_flush(consumer, partition, upto=fence_first):
                return
            state.start = state.upto = fence_last + 1
            state.gaps.forget_below(state.start)
            if offset <= fence_last:
                self._rewind(consumer, partition, state)
                return
            # Past the fence: the hole up to ``offset`` was proven, fence included.
        _, timestamp = msg.timestamp()
        key, value = msg.key(), msg.value()
        if not state.records:
            state.opened_at = time.monotonic()
        if self.stats.first_record is None:
            self.stats.first_record = state.opened_at
        state.records.append(ArchivedRecord(offset, timestamp, key, value, _headers(msg.headers())))
        state.upto = offset + 1
        state.payload += len(key or b"") + len(value or b"")
        state.at_eof = False
        if len(state.records) >= self.config.roll_records or (
            state.payload >= self.config.roll_bytes
        ):
            self._safe_flush(consumer, partition)

    def _roll_due(self, consumer: Consumer, *, force: bool = False) -> None:
        now = time.monotonic()
        for partition, state in list(self._parts.items()):
            due = force or (state.at_eof and self._once)
            if state.records and (due or now - state.opened_at >= self.config.roll_seconds):
                self._safe_flush(consumer, partition)

    def _note_ends(self, consumer: Consumer) -> None:
        """Note each assigned partition's end from the consumer's cache (no broker request),
        here on the loop's thread: the consumer's calls from another thread wait for
        ``consume()`` to return."""
        now = time.monotonic()
        if now < self._ends_due:
            return
        self._ends_due = now + END_INTERVAL_S
        ends: dict[int, int] = {}
        for partition in list(self._parts):
            tp = TopicPartition(self.config.topic, partition)
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                ends[partition] = high
        self.ends = ends

    # -- the loop --------------------------------------------------------------------------
    def run(
        self,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
        assignment_timeout_s: float = 60.0,
    ) -> ArchiverStats:
        """Archive until ``stop`` is set (or, with ``once``, until every assigned partition
        is archived up to its end), then publish open segments and leave the group.

        Raises:
            ArchiveError: ``once`` was asked but no partition was assigned in time.
            DecodeError: a value could not be checked for personal data (see the mask).
            KafkaException: the consumer failed for a reason other than a rebalance.
        """
        self._once = once
        self.stats = ArchiverStats()
        consumer = self._consumer_factory(self.config.consumer_config())
        self._consumer = consumer
        stop = stop or threading.Event()
        consumer.subscribe(
            [self.config.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        deadline = time.monotonic() + assignment_timeout_s
        try:
            while not stop.is_set():
                batch = consumer.consume(num_messages=1000, timeout=self.config.poll_timeout_s)
                for state in self._parts.values():
                    state.rewound = False  # stale messages only come in the batch of the seek
                for msg in batch:
                    self._take(consumer, msg)
                self._roll_due(consumer)
                self._note_ends(consumer)
                if once:
                    if self._parts and all(
                        s.at_eof and not s.records for s in self._parts.values()
                    ):
                        break
                    if not self._parts and time.monotonic() > deadline:
                        raise ArchiveError(
                            f"no partition of {self.config.topic} was assigned to this archiver"
                            f" within {assignment_timeout_s:.0f}s; is another archiver of group"
                            f" {self.config.group_id!r} holding them all?"
                        )
            self._roll_due(consumer, force=True)
        finally:
            self.stats.finished = time.monotonic()
            self._consumer = None
            consumer.close()
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        return self.stats


def _kafka_probe(config: ArchiverConfig) -> OffsetProbe:
    return KafkaOffsetProbe(
        config.bootstrap_servers, config.topic, group_id=f"{config.group_id}-probe"
    )


def _headers(raw: object) -> tuple[tuple[str, bytes | None], ...]:
    """Kafka headers as archived: ``(name, bytes)`` pairs in order, repeats kept."""
    if not raw:
        return ()
    pairs: Iterable[Any] = raw.items() if isinstance(raw, dict) else raw  # type: ignore[assignment]
    return tuple((str(k), v.encode() if isinstance(v, str) else v) for k, v in pairs)
