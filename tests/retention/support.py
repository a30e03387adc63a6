"""Plain helpers shared by the retention tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runstate.retention import ArchivedRecord, ArchiveSegment, ArchiveStore, parse_policy
from runstate.retention.context import RetentionContext
from runstate.retention.kafka_log import SizeSample
from runstate.streams.topics import TopicNames

#: Wall-clock origin of factory records: 2025-01-01T00:00:00Z.
T0_MS = 1_735_689_600_000
CREATED = datetime(2025, 6, 1, tzinfo=UTC)

#: The deployment, runs and offsets of the legal-hold tests: three runs round-robin by
#: offset, one of them held, over 90 offsets; ``HOLD_NOW`` is past every factory record's
#: 30-day retention.
HOLD_NAMES = TopicNames("rs")
HOLD_RUNS = ("run-a", "run-b", "run-held")
HOLD_OFFSETS = 90
HOLD_NOW = datetime(2026, 1, 1, tzinfo=UTC)

RecordFactory = Callable[..., list[ArchivedRecord]]
SegmentFactory = Callable[..., ArchiveSegment]


def event_value(fingerprint: bytes = b"\x01" * 8, body: bytes = b"payload") -> bytes:
    """A value framed like single-object-encoded Avro: C3 01, 8 fingerprint bytes, body."""
    return b"\xc3\x01" + fingerprint + body


@dataclass
class MemoryKafka:
    """A :class:`KafkaLog` over in-memory partitions: offset -> timestamp."""

    topic: str
    partitions: dict[int, dict[int, int]]
    deleted: dict[int, int] = field(default_factory=dict)
    #: Record keys by partition and offset (for ``read_records``); absent: ``run-<offset>``.
    keys: dict[int, dict[int, bytes]] = field(default_factory=dict)

    def topics(self) -> set[str]:
        return {self.topic}

    def _only(self, topic: str) -> None:
        # One topic lives here; asking for another (or None) is a caller's bug, not "empty".
        if topic != self.topic:
            raise KeyError(f"MemoryKafka holds {self.topic!r}, not {topic!r}")

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        self._only(topic)
        return {
            p: (self.deleted.get(p, min(recs, default=0)), max(recs, default=-1) + 1)
            for p, recs in self.partitions.items()
        }

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        self._only(topic)
        low, high = self.watermarks(topic)[partition]
        recs = self.partitions[partition]
        return next((o for o in range(low, high) if recs[o] >= timestamp_ms), high)

    def delete_records(self, topic: str, before: Mapping[int, int]) -> dict[int, int]:
        self._only(topic)
        self.deleted.update(before)
        return dict(before)

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        self._only(topic)
        return SizeSample(10, 1000)  # 100 bytes a record

    def read_records(
        self, topic: str, partition: int, *, start: int, end: int
    ) -> Iterator[ArchivedRecord]:
        low, high = self.watermarks(topic)[partition]
        keys = self.keys.get(partition, {})
        for offset in range(max(start, low), min(end, high)):
            key = keys.get(offset, f"run-{offset}".encode())
            yield ArchivedRecord(offset, self.partitions[partition][offset], key, b"v")


def hold_context(
    store: ArchiveStore, *, holds: tuple[str, ...], hold_archive: bool = True
) -> RetentionContext:
    """A policy archiving ``rs.events`` (30d) with ``rs.state-changes`` unarchived (and a
    hold archive unless told otherwise), both served by ``store``."""
    events, changes = HOLD_NAMES.events, HOLD_NAMES.state_changes
    changes_holds = "    hold_archive: {target: 'local:/unused'}\n" if hold_archive else ""
    policy = parse_policy(
        f"legal_holds: {list(holds)}\ntopics:\n  {events}:\n    hot: 1d\n"
        "    archive: {target: 'local:/unused'}\n    archive_retention: 30d\n"
        f"  {changes}:\n    hot: 1d\n{changes_holds}"
    )
    context = RetentionContext(policy, HOLD_NAMES, "unused:9092")
    # The backend under test instead of the policy's targets.
    context._stores[events] = store
    context._stores[f"hold:{changes}"] = store
    return context


def key_counts(keys: Iterable[bytes | None]) -> Counter[str]:
    """Records per run id (record key)."""
    return Counter((k or b"").decode() for k in keys)
