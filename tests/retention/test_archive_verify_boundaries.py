"""``verify`` at its boundaries: one-offset gaps and overlaps, and where the holes are.

On the local backend only: the boundaries are arithmetic over manifests, which both
backends list alike (``test_archive_verify.py`` runs the checks on both).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate.retention import IssueKind, LocalArchive, build_segment, verify

from .support import RecordFactory, SegmentFactory
from .test_archive_verify import publish_forcibly

TOPIC = "runstate.events"


@pytest.fixture
def store(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def found(store: LocalArchive, **kw: object) -> list[tuple[IssueKind, int, int]]:
    """Coverage issues; hand-copied segments also break the chain (test_archive_chain)."""
    report = verify(store, TOPIC, 0, **kw)  # type: ignore[arg-type]
    return [
        (i.kind, i.first_offset, i.last_offset)
        for i in report.issues
        if i.kind is not IssueKind.CHAIN
    ]


def test_a_one_offset_gap_is_found(store: LocalArchive, segment_factory: SegmentFactory) -> None:
    store.put_segment(segment_factory(0, 9))
    store.put_segment(segment_factory(11, 19))

    assert found(store, deep=False) == [(IssueKind.GAP, 10, 10)]
    assert verify(store, TOPIC, 0, deep=False).watermark == 10


def test_a_one_offset_overlap_is_found(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(0, 9))
    publish_forcibly(store, segment_factory, 9, 19)

    assert found(store, deep=False) == [(IssueKind.OVERLAP, 9, 9)]


def test_an_overlap_ending_past_the_previous_segment_ends_where_the_previous_does(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(0, 9))
    publish_forcibly(store, segment_factory, 5, 14)
    store.put_segment(segment_factory(15, 19))

    assert found(store, deep=False) == [(IssueKind.OVERLAP, 5, 9)]


def test_a_segment_inside_an_earlier_one_does_not_hide_a_later_gap(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    """After a contained segment, coverage is still measured from the longer one."""
    store.put_segment(segment_factory(0, 19))
    publish_forcibly(store, segment_factory, 5, 9)
    publish_forcibly(store, segment_factory, 15, 24)

    assert found(store, deep=False) == [(IssueKind.OVERLAP, 5, 9), (IssueKind.OVERLAP, 15, 19)]


def test_an_archive_starting_at_its_start_has_no_hole(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(5, 9))

    assert found(store, deep=False, start=5) == []
    assert found(store, deep=False, start=4) == [(IssueKind.GAP, 4, 4)]


@pytest.mark.parametrize(
    ("kafka_earliest", "advice"),
    [
        (5, "Kafka no longer has them either"),
        (6, "Kafka no longer has them either"),
        (0, "Kafka may still have them: run `runstate archive run`"),
        (2, "Kafka's log starts later too"),
        (None, "Kafka's log starts later too"),
    ],
)
def test_the_hole_before_the_archive_says_where_the_offsets_may_be(
    store: LocalArchive, segment_factory: SegmentFactory, kafka_earliest: int | None, advice: str
) -> None:
    store.put_segment(segment_factory(5, 9))

    report = verify(store, TOPIC, 0, deep=False, start=0, kafka_earliest=kafka_earliest)

    assert (report.issues[0].kind, report.issues[0].first_offset) == (IssueKind.GAP, 0)
    assert report.issues[0].last_offset == 4
    assert advice in report.issues[0].detail


def test_kafka_starting_right_after_the_archive_loses_nothing(
    store: LocalArchive, segment_factory: SegmentFactory
) -> None:
    store.put_segment(segment_factory(0, 9))

    assert found(store, deep=False, kafka_earliest=10) == []
    assert found(store, deep=False, kafka_earliest=11) == [(IssueKind.GAP, 10, 10)]


def test_an_empty_archive_is_measured_from_its_start(store: LocalArchive) -> None:
    assert found(store, deep=False, start=3, kafka_earliest=3) == []
    assert found(store, deep=False, start=3, kafka_earliest=5) == [(IssueKind.GAP, 3, 4)]


def test_records_outside_the_manifest_range_are_found(
    store: LocalArchive, record_factory: RecordFactory
) -> None:
    """One record before the range, and one after it: both are content issues."""
    for first, last, claimed in [(10, 19, {"first_offset": 11}), (20, 29, {"last_offset": 28})]:
        segment = build_segment(TOPIC, 0, record_factory([first, first + 5, last]))
        lying = segment.manifest.model_copy(update=claimed)
        store._write(lying.segment_name, segment.data)
        store._write(lying.manifest_name, lying.to_json())

    issues = verify(store, TOPIC, 0, start=11).issues

    assert [(i.kind, i.first_offset, i.detail.split(": ")[-1]) for i in issues] == [
        (IssueKind.CONTENT, 11, "records span 10..19, outside range"),
        (IssueKind.CONTENT, 20, "records span 20..29, outside range"),
    ]
