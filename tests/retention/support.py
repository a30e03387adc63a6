"""Plain helpers shared by the retention tests (fixtures live in ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runstate.retention import ArchivedRecord, ArchiveSegment
from runstate.retention.kafka_log import SizeSample

#: Wall-clock origin of factory records: 2025-01-01T00:00:00Z.
T0_MS = 1_735_689_600_000
CREATED = datetime(2025, 6, 1, tzinfo=UTC)

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

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        return {
            p: (self.deleted.get(p, min(recs, default=0)), max(recs, default=-1) + 1)
            for p, recs in self.partitions.items()
        }

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        low, high = self.watermarks(topic)[partition]
        recs = self.partitions[partition]
        return next((o for o in range(low, high) if recs[o] >= timestamp_ms), high)

    def delete_records(self, topic: str, before: Mapping[int, int]) -> dict[int, int]:
        self.deleted.update(before)
        return dict(before)

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        return SizeSample(10, 1000)  # 100 bytes a record

    def read_records(
        self, topic: str, partition: int, *, start: int, end: int
    ) -> Iterator[ArchivedRecord]:
        low, high = self.watermarks(topic)[partition]
        keys = self.keys.get(partition, {})
        for offset in range(max(start, low), min(end, high)):
            key = keys.get(offset, f"run-{offset}".encode())
            yield ArchivedRecord(offset, self.partitions[partition][offset], key, b"v")
