"""``verify`` finds gaps, overlaps and damaged segments, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runstate.errors import ArchiveError
from runstate.retention import BlobArchive, IssueKind, verify

from .support import SegmentFactory

TOPIC = "runstate.events"


def publish_forcibly(store: BlobArchive, segment_factory: SegmentFactory, a: int, b: int) -> None:
    """Write a segment bypassing put_segment's overlap check, as a hand copy would."""
    segment = segment_factory(a, b)
    store._write(segment.manifest.segment_name, segment.data)
    store._write(segment.manifest.manifest_name, segment.manifest.to_json())


def test_a_sound_archive_passes(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    for a in range(0, 30, 10):
        archive_store.put_segment(segment_factory(a, a + 9))
    archive_store.delete_segment(archive_store.list_manifests(TOPIC, 0)[0])

    report = verify(archive_store, TOPIC, 0)

    assert report.ok, report.issues
    assert (report.segments, report.expired, report.records) == (2, 1, 20)
    assert (report.first_offset, report.watermark) == (0, 30)
    assert report.location == archive_store.location


def test_empty_partition(archive_store: BlobArchive) -> None:
    report = verify(archive_store, TOPIC, 4)

    assert report.ok
    assert (report.segments, report.first_offset, report.watermark) == (0, None, None)


def test_gaps_and_overlaps_are_each_reported(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    for a, b in [(0, 9), (15, 19), (30, 39)]:
        archive_store.put_segment(segment_factory(a, b))
    publish_forcibly(archive_store, segment_factory, 35, 44)

    report = verify(archive_store, TOPIC, 0, deep=False)

    assert [(i.kind, i.first_offset, i.last_offset) for i in report.issues] == [
        (IssueKind.GAP, 10, 14),
        (IssueKind.GAP, 20, 29),
        (IssueKind.OVERLAP, 35, 39),
        # Copied in by hand: no chain link after chained segments.
        (IssueKind.CHAIN, 35, 44),
    ]
    assert not report.ok
    assert report.watermark == 10
    assert "between" in str(report.issues[0])


def test_a_contained_overlap_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 19))
    publish_forcibly(archive_store, segment_factory, 5, 9)
    archive_store.put_segment(segment_factory(20, 29))

    kinds = [
        (i.kind, i.first_offset, i.last_offset) for i in verify(archive_store, TOPIC, 0).issues
    ]

    # The hand copy has no chain link after a chained segment.
    assert kinds == [(IssueKind.CHAIN, 5, 9), (IssueKind.OVERLAP, 5, 9)]


def test_checksum_mismatch_is_found_by_rehashing(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 9))
    bad = archive_store.put_segment(segment_factory(10, 19))
    data = bytearray(archive_store.fetch_segment(bad))
    data[-20] ^= 0x01
    archive_store._write(bad.segment_name, bytes(data))

    shallow = verify(archive_store, TOPIC, 0, deep=False)
    deep = verify(archive_store, TOPIC, 0)

    assert shallow.ok  # manifests alone look fine
    assert deep.issues[0].kind == IssueKind.CHECKSUM
    assert {(i.first_offset, i.last_offset) for i in deep.issues} == {(10, 19)}


def test_missing_body_and_sidecar_are_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    gone = archive_store.put_segment(segment_factory(0, 9))
    sidecar = archive_store.put_segment(segment_factory(10, 19, run_ids_inline_limit=0))
    archive_store._delete(gone.segment_name)
    archive_store._delete(sidecar.sidecar_name)

    issues = verify(archive_store, TOPIC, 0).issues

    assert [(i.kind, i.first_offset) for i in issues] == [
        (IssueKind.MISSING, 0),
        (IssueKind.MISSING, 10),
    ]
    assert "run-ids sidecar" in issues[1].detail


def test_content_that_disagrees_with_the_manifest_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    segment = segment_factory(0, 9)
    lying = segment.manifest.model_copy(update={"record_count": 7})
    archive_store._write(segment.manifest.segment_name, segment.data)
    archive_store._write(lying.manifest_name, lying.to_json())

    issues = verify(archive_store, TOPIC, 0).issues

    assert [(i.kind, i.detail.split(": ")[-1]) for i in issues] == [
        (IssueKind.CONTENT, "10 records, manifest says 7")
    ]


def test_undecodable_body_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    manifest = archive_store.put_segment(segment_factory(0, 9))
    archive_store._write(manifest.segment_name, b"not avro")

    kinds = [i.kind for i in verify(archive_store, TOPIC, 0).issues]

    assert kinds == [IssueKind.CHECKSUM, IssueKind.CONTENT]


def test_orphans_are_listed_but_do_not_fail(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 9))
    orphan = segment_factory(10, 19)
    archive_store._write(orphan.manifest.segment_name, orphan.data)

    report = verify(archive_store, TOPIC, 0)

    assert report.ok
    assert report.orphans == (orphan.manifest.segment_name,)


def test_an_unreadable_manifest_stops_verification(archive_store: BlobArchive) -> None:
    archive_store._write(
        "runstate.events/00000/00000000000000000000-00000000000000000009.manifest.json", b"{"
    )

    with pytest.raises(ArchiveError, match="not a valid segment manifest"):
        verify(archive_store, TOPIC, 0)


def test_report_keeps_tombstones_out_of_the_checks(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    manifest = archive_store.put_segment(segment_factory(0, 9))
    archive_store.delete_segment(manifest, at=datetime(2026, 1, 1, tzinfo=UTC))

    report = verify(archive_store, TOPIC, 0)

    assert report.ok and report.expired == 1 and report.segments == 0


def test_an_archive_that_does_not_start_at_zero_has_a_hole(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    """The case a new store after a trim shows: contiguous from 15, but 0..14 are nowhere."""
    archive_store.put_segment(segment_factory(15, 26))

    report = verify(archive_store, TOPIC, 0, kafka_earliest=15)

    assert [(i.kind, i.first_offset, i.last_offset) for i in report.issues] == [
        (IssueKind.GAP, 0, 14)
    ]
    assert "starts at 15" in report.issues[0].detail
    assert "--from-offset 15" in report.issues[0].detail


def test_a_given_start_accepts_an_archive_continuing_another_store(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(15, 26))

    assert verify(archive_store, TOPIC, 0, start=15, kafka_earliest=15).ok
    assert not verify(archive_store, TOPIC, 0, start=10, kafka_earliest=15).ok


def test_offsets_trimmed_from_kafka_beyond_the_archive_are_lost(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 9))

    report = verify(archive_store, TOPIC, 0, kafka_earliest=25)

    assert [(i.kind, i.first_offset, i.last_offset) for i in report.issues] == [
        (IssueKind.GAP, 10, 24)
    ]
    assert "neither archived nor in Kafka" in report.issues[0].detail
    assert verify(archive_store, TOPIC, 0, kafka_earliest=10).ok  # Kafka has the rest


def test_an_empty_archive_of_a_trimmed_partition_is_not_sound(
    archive_store: BlobArchive,
) -> None:
    assert not verify(archive_store, TOPIC, 3, kafka_earliest=5).ok
    assert verify(archive_store, TOPIC, 3, kafka_earliest=0).ok
