"""The archiver accepts exactly the next offset (bug F4), deterministically.

A scripted one-partition consumer hands out batches the way librdkafka does: a batch already
returned is not changed by a later ``seek``, so messages fetched before a seek are delivered
after it. It also answers as the broker's offset probe, from the same log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from runstate.errors import ArchiveError
from runstate.retention import ArchivedRecord, ArchiveSegment, LocalArchive, SegmentManifest, verify
from runstate.retention.archiver import Archiver, ArchiverConfig, _Partition
from runstate.retention.offset_gaps import ProvenGaps, first_unproven_hole

from .kafka_support import archived_offsets
from .support import T0_MS, event_value

TOPIC = "runstate.events"


class FullDiskArchive(LocalArchive):
    """A local archive whose first ``failures`` publishes fail as on a full disk."""

    def __init__(self, root: Path, *, failures: int = 0) -> None:
        super().__init__(root)
        self.failures = failures

    def put_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        if self.failures > 0:
            self.failures -= 1
            raise ArchiveError(f"cannot write {segment.manifest.segment_name}: [Errno 28]")
        return super().put_segment(segment)


class ScriptedConsumer:
    """Partition 0 of ``TOPIC`` holding records at ``readable`` and ending at ``end``."""

    def __init__(
        self, readable: Sequence[int], *, end: int, batch: int = 1000, drop_once: int = -1
    ) -> None:
        self.readable = list(readable)
        self.end = end
        self.batch = batch
        self.drop_once = drop_once  # a record the first fetch over it leaves out
        self.position = 0
        self.eof_sent = False
        self.seeks: list[int] = []
        self.probes: list[int] = []
        self._on_assign: Callable[..., None] | None = None

    # -- the consumer side ---------------------------------------------------------------
    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self._on_assign = callbacks["on_assign"]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.position = partitions[0].offset

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp.offset)
        self.position, self.eof_sent = tp.offset, False

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 1.0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, self.end

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, 0, -1001)]

    def commit(self, **kwargs: Any) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        if self._on_assign is not None:
            assign, self._on_assign = self._on_assign, None
            assign(self, [TopicPartition(TOPIC, 0)])
        pending = [o for o in self.readable if o >= self.position][: min(num_messages, self.batch)]
        out = []
        for o in pending:
            if o == self.drop_once:
                self.drop_once = -1
                continue
            value = event_value(body=b"%d" % o)
            out.append(
                Message(
                    topic=TOPIC,
                    partition=0,
                    offset=o,
                    key=b"run-1",
                    value=value,
                    timestamp=(1, T0_MS + o),
                )
            )
        if pending:
            self.position = pending[-1] + 1
        if not [o for o in self.readable if o >= self.position] and not self.eof_sent:
            self.position, self.eof_sent = self.end, True
            eof = KafkaError(KafkaError._PARTITION_EOF)
            out.append(Message(topic=TOPIC, partition=0, offset=self.end, error=eof))
        return out

    def unassign(self) -> None:
        pass

    def close(self) -> None:
        pass

    # -- the probe side ------------------------------------------------------------------
    def next_readable(self, partition: int, offset: int) -> int | None:
        self.probes.append(offset)
        return next((o for o in self.readable if o >= offset), self.end)


def archive(consumer: ScriptedConsumer, store: LocalArchive, *, roll: int) -> Archiver:
    config = ArchiverConfig("unused:9092", TOPIC, "g", roll_records=roll, retry_backoff_s=0)
    archiver = Archiver(
        config,
        store,
        consumer_factory=lambda _config: consumer,  # type: ignore[arg-type,return-value]
        probe_factory=lambda _config: consumer,
    )
    archiver.run(once=True)
    return archiver


def assert_sound(store: LocalArchive, readable: Sequence[int], end: int) -> None:
    """Every readable offset archived once, and the manifests tile ``0..end - 1``."""
    seen = archived_offsets(store, TOPIC)
    assert sorted(o for _p, o in seen) == list(readable), "offsets skipped or archived twice"
    assert max(seen.values()) == 1
    report = verify(store, TOPIC, 0)
    assert report.ok, report.issues
    assert report.watermark == end


def test_records_prefetched_past_a_failed_publish_are_not_archived_in_its_place(
    tmp_path: Path,
) -> None:
    # F4: the put of 0-199 fails; 200-999 are already in the consumer's batch when the
    # archiver seeks back to 0. They must not open the retried segment.
    readable = range(3000)
    store = FullDiskArchive(tmp_path / "archive", failures=3)
    consumer = ScriptedConsumer(readable, end=3000)

    archive(consumer, store, roll=200)

    assert_sound(store, readable, 3000)
    assert all(m.record_count == 200 for m in store.list_manifests(TOPIC, 0))
    assert consumer.probes == [], "no hole on this log: the broker is never asked"


def test_holes_the_broker_confirms_are_covered_without_records(tmp_path: Path) -> None:
    # Transaction markers at 10, 20-22 and a trailing one at 50.
    readable = [*range(10), *range(11, 20), *range(23, 50)]
    store = LocalArchive(tmp_path / "archive")
    consumer = ScriptedConsumer(readable, end=51)

    archive(consumer, store, roll=15)

    assert_sound(store, readable, 51)
    assert consumer.probes == [10, 20, 50]


def test_an_offset_the_consumer_left_out_is_fetched_again(tmp_path: Path) -> None:
    readable = range(100)
    store = LocalArchive(tmp_path / "archive")
    consumer = ScriptedConsumer(readable, end=100, drop_once=25)

    archive(consumer, store, roll=30)

    assert_sound(store, readable, 100)
    assert consumer.probes == [25] and 25 in consumer.seeks


def test_the_last_check_refuses_a_segment_that_would_claim_missing_offsets(
    tmp_path: Path,
) -> None:
    store = LocalArchive(tmp_path / "archive")
    config = ArchiverConfig("unused:9092", TOPIC, "g")
    archiver = Archiver(config, store)
    records = [ArchivedRecord(o, T0_MS, b"run-1", event_value()) for o in range(5, 10)]
    archiver._parts[0] = _Partition(start=0, fences=[], records=records, upto=10)

    with pytest.raises(ArchiveError, match=r"0-9: offsets 0\.\.5 are neither records"):
        archiver._flush(0)
    assert store.list_manifests(TOPIC, 0) == []


@pytest.mark.parametrize(
    ("offsets", "end", "gaps", "hole"),
    [
        ([0, 1, 2], 2, [], None),
        ([1, 2], 2, [], (0, 1)),  # starts past its first offset
        ([0, 2], 2, [], (1, 2)),  # a hole inside
        ([0, 1], 3, [], (2, 3)),  # a hole at the end
        ([0, 2], 3, [(1, 2), (3, 4)], None),  # proven holes inside and at the end
        ([0, 3], 3, [(1, 2)], (1, 3)),  # proven only in part
        ([0, 0, 1], 1, [], (1, 0)),  # a record twice
        ([0, 1], 0, [], (1, 1)),  # a record past the last offset
    ],
)
def test_first_unproven_hole(
    offsets: list[int], end: int, gaps: list[tuple[int, int]], hole: tuple[int, int] | None
) -> None:
    assert first_unproven_hole(0, offsets, end, ProvenGaps(list(gaps))) == hole


def test_proven_gaps_cover_only_their_own_offsets() -> None:
    gaps = ProvenGaps()
    gaps.add(10, 20)
    gaps.add(5, 5)  # empty: not kept
    assert gaps.ranges == [(10, 20)]
    assert gaps.covers(12, 20) and gaps.covers(7, 7)
    assert not gaps.covers(9, 12) and not gaps.covers(15, 21)
    gaps.forget_below(20)
    assert gaps.ranges == []
