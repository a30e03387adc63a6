"""F4: after a failed publish the archiver must resume exactly at the store's resume point.

Real broker, a store that fails its first publishes like a full disk, and enough records per
partition that the consumer has prefetched far past the failed segment when it resyncs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from runstate.errors import ArchiveError
from runstate.retention import ArchiveSegment, LocalArchive, SegmentManifest, verify
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.offset_gaps import KafkaOffsetProbe, OffsetProbe

from .kafka_support import (
    archived_offsets,
    create_topics,
    generate_runs,
    in_time_order,
    produce,
    topic_offsets,
)


class FullDiskArchive(LocalArchive):
    """A local archive whose first ``failures`` publishes fail as on a full disk."""

    def __init__(self, root: Path, *, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        if self.failures > 0:
            self.failures -= 1
            raise ArchiveError(
                f"cannot write {segment.manifest.segment_name}: [Errno 28] No space left on device"
            )
        return super().put_segment(segment)


@pytest.mark.integration
def test_failed_publishes_neither_skip_nor_double_an_offset(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("full")
    names = create_topics(kafka_bootstrap, prefix, partitions=1)
    events = in_time_order(generate_runs(300, seed=4))
    produce(kafka_bootstrap, prefix, events)
    store = FullDiskArchive(tmp_path / "archive", failures=3)
    config = ArchiverConfig(
        kafka_bootstrap, names.events, f"{prefix}-g", roll_records=200, retry_backoff_s=0.01
    )

    stats = Archiver(config, store).run(once=True)

    assert stats.failed_puts == 3
    seen = archived_offsets(store, names.events)
    expected = topic_offsets(kafka_bootstrap, names.events)
    assert not {k: n for k, n in seen.items() if n > 1}
    assert set(seen) == expected, f"missing {sorted(expected - set(seen))[:5]}"
    for m in store.list_manifests(names.events, 0):
        # no transactions on the events topic: every covered offset is a record
        assert m.record_count == m.last_offset - m.first_offset + 1, m
    assert verify(store, names.events, 0).ok


@pytest.mark.integration
def test_transaction_markers_and_aborted_records_are_proven_holes(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # Not the events topic's case (no transactions there), but any topic may have them:
    # the segments must tile the log, markers and aborted records included, without records.
    prefix = unique_name("txn")
    topic = create_topics(kafka_bootstrap, prefix, partitions=1).events
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": prefix})
    producer.init_transactions(30)
    for batch, commit in ((30, True), (10, False), (25, True), (5, False)):
        producer.begin_transaction()
        for i in range(batch):
            producer.produce(topic, key=b"run-1", value=b"%d" % i, partition=0)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # else the abort purges them unsent: no hole in the log
            producer.abort_transaction(30)
    store = LocalArchive(tmp_path / "archive")
    probes: list[int] = []

    class CountingProbe(KafkaOffsetProbe):
        def next_readable(self, partition: int, offset: int) -> int | None:
            probes.append(offset)
            return super().next_readable(partition, offset)

    def probe(config: ArchiverConfig) -> OffsetProbe:
        return CountingProbe(kafka_bootstrap, topic, group_id=f"{prefix}-probe")

    config = ArchiverConfig(kafka_bootstrap, topic, f"{prefix}-g", roll_records=20)
    stats = Archiver(config, store, probe_factory=probe).run(once=True)

    committed = topic_offsets(kafka_bootstrap, topic)
    assert stats.records == len(committed) == 55
    seen = archived_offsets(store, topic)
    assert set(seen) == committed and max(seen.values()) == 1
    report = verify(store, topic, 0)
    assert report.ok, report.issues
    # 30 + marker, 10 aborted + marker, 25 + marker, 5 aborted + marker: all 74 covered
    assert report.watermark == 74
    assert probes == [30, 67], "one probe per hole: 30..41 and 67..73"
