"""``verify`` of hold segments: paired with their sources, their records, a hold archive.

Hold segments are written here by hand (``_write``), as a damaged or hand-edited store
would hold them: ``put_hold_segment`` refuses most of these states.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate.retention import ArchiveSegment, IssueKind, LocalArchive, SegmentManifest, verify
from runstate.retention.manifest import HoldOrigin

from .support import CREATED, SegmentFactory
from .test_archive_verify import publish_forcibly

TOPIC = "runstate.events"
OTHER_SHA = "b" * 64


@pytest.fixture
def store(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def write_hold(
    store: LocalArchive,
    segment: ArchiveSegment,
    *,
    holds: list[str],
    source_sha256: str | None,
) -> SegmentManifest:
    """A hold segment with ``segment``'s records (run ids ``run-<offset // 10>``)."""
    origin = HoldOrigin(
        holds=holds,
        source_sha256=source_sha256,
        source_record_count=segment.manifest.record_count,
        held_at=CREATED,
    )
    hold = segment.manifest.model_copy(update={"hold": origin})
    store._write(hold.segment_name, segment.data)
    store._write(hold.manifest_name, hold.to_json())
    return hold


def content(store: LocalArchive, **kw: bool) -> list[tuple[int, int, str]]:
    report = verify(store, TOPIC, 0, **kw)
    return [
        (i.first_offset, i.last_offset, i.detail.split(": ", 1)[1])
        for i in report.issues
        if i.kind is IssueKind.CONTENT
    ]


NO_SOURCE = "no segment of this range with the checksum it was cut from"


def test_a_hold_segment_without_its_source_is_reported(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    hold = write_hold(store, segment_factory(0, 9), holds=["run-0"], source_sha256=OTHER_SHA)

    report = verify(store, TOPIC, 0, deep=False)

    assert [(i.kind, i.first_offset, i.last_offset) for i in report.issues] == [
        (IssueKind.CONTENT, 0, 9)
    ]
    assert report.issues[0].detail == f"{hold.manifest_name}: {NO_SOURCE}"


def test_a_hold_segment_cut_from_another_version_of_its_source_is_reported(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(0, 9))
    write_hold(store, segment_factory(0, 9), holds=["run-0"], source_sha256=OTHER_SHA)

    assert content(store, deep=False) == [(0, 9, NO_SOURCE)]


def test_every_hold_segment_is_paired_not_just_the_first(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    """A hold archive's segment (no source) and a sound pair come before the stray one."""
    write_hold(store, segment_factory(0, 9), holds=["run-0"], source_sha256=None)
    source = store.put_segment(segment_factory(10, 19))
    write_hold(store, segment_factory(10, 19), holds=["run-1"], source_sha256=source.sha256)
    write_hold(store, segment_factory(20, 29), holds=["run-2"], source_sha256=OTHER_SHA)

    assert content(store, deep=False, start=10) == [(20, 29, NO_SOURCE)]


def test_a_tombstone_naming_another_hold_segment_is_reported_from_both_sides(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    source = store.put_segment(segment_factory(0, 9))
    tombstone = source.expire(CREATED).model_copy(update={"hold_segment_sha256": OTHER_SHA})
    store._write(tombstone.manifest_name, tombstone.to_json())
    store._delete(source.segment_name)
    write_hold(store, segment_factory(0, 9), holds=["run-0"], source_sha256=source.sha256)

    report = verify(store, TOPIC, 0, deep=False)

    assert [(i.kind, i.first_offset) for i in report.issues] == [
        (IssueKind.CONTENT, 0),
        (IssueKind.MISSING, 0),
    ]
    assert report.issues[0].detail.endswith("its source's tombstone names another hold segment")
    assert f"({OTHER_SHA[:12]}…) is missing" in report.issues[1].detail


def test_a_hold_segment_with_records_of_runs_it_was_not_kept_for(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    source = store.put_segment(segment_factory(0, 19))
    write_hold(store, segment_factory(0, 19), holds=["run-0"], source_sha256=source.sha256)

    assert content(store) == [
        (0, 19, "hold segment holds records of runs it was not kept for: ['run-1']")
    ]
    report = verify(store, TOPIC, 0)
    assert (report.hold_segments, report.held_records) == (1, 20)


def test_a_hold_archive_is_checked_for_overlaps_only(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    write_hold(store, segment_factory(0, 9), holds=["run-0"], source_sha256=None)
    write_hold(store, segment_factory(20, 29), holds=["run-2"], source_sha256=None)

    assert verify(store, TOPIC, 0, holds_only=True, kafka_earliest=40).ok
    write_hold(store, segment_factory(25, 34), holds=["run-2"], source_sha256=None)
    report = verify(store, TOPIC, 0, holds_only=True, deep=False)
    assert [(i.kind, i.first_offset, i.last_offset) for i in report.issues] == [
        (IssueKind.OVERLAP, 25, 29)
    ]


def test_the_report_names_its_partition_and_each_issue_says_what_is_wrong(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(0, 9))
    publish_forcibly(store, segment_factory, 5, 9)
    store.put_segment(segment_factory(12, 19))
    store._write(segment_factory(0, 9).manifest.segment_name, b"not avro")

    report = verify(store, TOPIC, 0)

    assert (report.topic, report.partition) == (TOPIC, 0)
    details = {(i.kind, i.first_offset): i.detail for i in report.issues}
    stem_0_9 = segment_factory(0, 9).manifest.stem
    assert details[IssueKind.OVERLAP, 5].endswith("both cover these offsets")
    # The contained 5..9 does not replace 0..9 as the segment the next one follows.
    assert details[IssueKind.GAP, 10].startswith(f"between {stem_0_9} and ")
    assert "manifest says" in details[IssueKind.CHECKSUM, 0]
    assert "cannot be decoded" in details[IssueKind.CONTENT, 0]


def test_a_missing_body_says_where_it_was_looked_for(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    gone = store.put_segment(segment_factory(0, 9))
    store._delete(gone.segment_name)

    (issue,) = verify(store, TOPIC, 0).issues

    assert issue.detail.endswith("is missing; run `archive verify` on its partition")
