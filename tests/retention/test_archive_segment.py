"""Segments and manifests: encoding, what a manifest records, naming, watermarks."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import ArchiveError
from runstate.retention import (
    SEGMENT_CODEC,
    ArchivedRecord,
    SegmentManifest,
    build_segment,
    contiguous_watermark,
    iter_segment,
    writer_fingerprint,
)
from runstate.retention.manifest import decode_run_ids_sidecar

from .support import CREATED, T0_MS, RecordFactory, SegmentFactory, event_value

maybe_bytes = st.none() | st.binary(max_size=64)
records_strategy = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=5),  # offset step (markers leave holes)
        st.integers(min_value=0, max_value=2**42),
        maybe_bytes,
        maybe_bytes,
        st.lists(st.tuples(st.text(max_size=10), maybe_bytes), max_size=3),
    ),
    min_size=1,
    max_size=30,
)


@given(records_strategy, st.integers(min_value=0, max_value=2**40))
def test_records_round_trip_exactly(
    raw: list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    start: int,
) -> None:
    offset = start
    records = []
    for step, ts, key, value, headers in raw:
        offset += step
        records.append(ArchivedRecord(offset, ts, key, value, tuple(headers)))

    segment = build_segment("t", 3, records, created_at=CREATED)

    assert list(iter_segment(segment.data)) == records
    assert segment.manifest.record_count == len(records)
    assert segment.manifest.first_offset == records[0].offset
    assert segment.manifest.last_offset == records[-1].offset


def test_manifest_describes_the_file(record_factory: RecordFactory) -> None:
    records = record_factory([10, 11, 13])
    records[1] = dataclasses.replace(records[1], value=event_value(b"\x02" * 8))
    records[2] = dataclasses.replace(records[2], value=None, timestamp_ms=T0_MS)

    segment = build_segment("runstate.events", 2, records, created_at=CREATED)
    m = segment.manifest

    assert (m.topic, m.partition, m.first_offset, m.last_offset) == ("runstate.events", 2, 10, 13)
    assert m.record_count == 3
    assert m.sha256 == hashlib.sha256(segment.data).hexdigest()
    assert m.size_bytes == len(segment.data)
    assert m.codec == SEGMENT_CODEC == "deflate"
    assert m.writer_fingerprints == ["0101010101010101", "0202020202020202"]
    # Producer timestamps went backwards at offset 13: the manifest keeps min and max.
    assert m.first_timestamp == datetime.fromtimestamp(T0_MS / 1000, tz=UTC)
    assert m.last_timestamp == datetime.fromtimestamp((T0_MS + 11_000) / 1000, tz=UTC)
    assert m.run_ids == ["run-1"]
    assert m.created_at == CREATED
    assert m.format_version == 1 and m.is_live


def test_segment_is_a_plain_avro_file_that_names_itself(segment_factory: SegmentFactory) -> None:
    segment = segment_factory(5, 9, partition=7)

    reader = fastavro.reader(io.BytesIO(segment.data))

    assert reader.codec == "deflate"
    assert reader.metadata["runstate.topic"] == "runstate.events"
    assert reader.metadata["runstate.partition"] == "7"
    assert (reader.metadata["runstate.first_offset"], reader.metadata["runstate.last_offset"]) == (
        "5",
        "9",
    )
    assert len(list(reader)) == 5


def test_covered_range_can_be_wider_than_the_records(record_factory: RecordFactory) -> None:
    # Transaction markers at 100 and 104: the archiver's positions cover them.
    segment = build_segment(
        "t", 0, record_factory([101, 102, 103]), first_offset=100, last_offset=104
    )

    assert (segment.manifest.first_offset, segment.manifest.last_offset) == (100, 104)
    assert segment.manifest.record_count == 3


@pytest.mark.parametrize(
    ("offsets", "kwargs", "message"),
    [
        ([], {}, "at least one record"),
        ([5, 5], {}, "offsets must increase"),
        ([5, 4], {}, "offsets must increase"),
        ([5, 6], {"first_offset": 6}, "outside the covered range"),
        ([5, 6], {"last_offset": 5}, "outside the covered range"),
    ],
)
def test_bad_input_is_refused(
    record_factory: RecordFactory, offsets: list[int], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        build_segment("t", 0, record_factory(offsets), **kwargs)


def test_bad_topic_names_cannot_escape_the_archive(record_factory: RecordFactory) -> None:
    for topic in ["../etc", "a/b", "..", "", "x" * 250]:
        with pytest.raises(ArchiveError, match="not a Kafka topic name"):
            build_segment(topic, 0, record_factory([1]))


def test_mask_is_applied_before_writing(record_factory: RecordFactory) -> None:
    def mask(record: ArchivedRecord) -> ArchivedRecord:
        return dataclasses.replace(record, value=event_value(b"\x09" * 8, b"masked"))

    segment = build_segment("t", 0, record_factory([1, 2]), mask=mask)

    assert {r.value for r in iter_segment(segment.data)} == {event_value(b"\x09" * 8, b"masked")}
    assert segment.manifest.writer_fingerprints == ["0909090909090909"]


def test_mask_may_not_move_records(record_factory: RecordFactory) -> None:
    with pytest.raises(ArchiveError, match="mask changed offset"):
        build_segment("t", 0, record_factory([1]), mask=lambda r: dataclasses.replace(r, offset=2))


def test_many_run_ids_go_to_a_sidecar(record_factory: RecordFactory) -> None:
    ids = [f"run-{i}" for i in range(5)]
    records = record_factory(range(5), run_ids=ids)

    small = build_segment("t", 0, records, run_ids_inline_limit=5)
    large = build_segment("t", 0, records, run_ids_inline_limit=4)

    assert small.manifest.run_ids == ids and small.run_ids_sidecar is None
    assert large.manifest.run_ids is None and large.run_ids_sidecar is not None
    ref = large.manifest.run_ids_sidecar
    assert ref is not None and ref.count == 5
    assert ref.sha256 == hashlib.sha256(large.run_ids_sidecar).hexdigest()
    assert decode_run_ids_sidecar(large.run_ids_sidecar, source="x") == frozenset(ids)


def test_garbage_is_not_a_segment() -> None:
    with pytest.raises(ArchiveError, match="damaged"):
        list(iter_segment(b"not avro at all"))
    other = io.BytesIO()
    fastavro.writer(other, {"type": "record", "name": "X", "fields": []}, [{}])
    with pytest.raises(ArchiveError, match="not an archive segment"):
        list(iter_segment(other.getvalue()))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (b"", None),
        (b"\xc3\x01\x00", None),
        (b"{json}", None),
        (b"\xc3\x01" + bytes(range(8)), "0001020304050607"),
        (b"\xc3\x01" + bytes(range(8)) + b"body", "0001020304050607"),
    ],
)
def test_writer_fingerprint(value: bytes | None, expected: str | None) -> None:
    assert writer_fingerprint(value) == expected


def test_names_sort_in_offset_order(segment_factory: SegmentFactory) -> None:
    manifests = [segment_factory(a, b, partition=12).manifest for a, b in [(9, 99), (100, 1000)]]

    names = [m.segment_name for m in manifests]

    assert names == sorted(names)
    assert names[0] == "runstate.events/00012/00000000000000000009-00000000000000000099.avro"
    assert manifests[0].manifest_name.endswith("-00000000000000000099.manifest.json")


def test_manifest_json_round_trips_and_refuses_damage(segment_factory: SegmentFactory) -> None:
    manifest = segment_factory(0, 3).manifest
    assert SegmentManifest.from_json(manifest.to_json(), source="m") == manifest

    doc = json.loads(manifest.to_json())
    for bad in [{"format_version": 2}, {"sha256": "xyz"}, {"last_offset": -1}, {"extra": 1}]:
        with pytest.raises(ArchiveError, match="not a valid segment manifest"):
            SegmentManifest.from_json(json.dumps(doc | bad).encode(), source="m")


def _manifest(first: int, last: int) -> SegmentManifest:
    return SegmentManifest(
        topic="t",
        partition=0,
        first_offset=first,
        last_offset=last,
        first_timestamp=CREATED,
        last_timestamp=CREATED,
        record_count=0,
        sha256="0" * 64,
        size_bytes=0,
        codec="deflate",
        created_at=CREATED,
    )


@pytest.mark.parametrize(
    ("ranges", "start", "expected"),
    [
        ([], None, None),
        ([(0, 9)], None, 10),
        ([(0, 9), (10, 19)], None, 20),
        ([(10, 19), (0, 9)], None, 20),
        ([(0, 9), (20, 29)], None, 10),
        ([(0, 9), (5, 14), (15, 19)], None, 20),
        ([(5, 9)], None, 10),
        ([(5, 9)], 0, None),  # Kafka still has 0..4, never archived
        ([(5, 9)], 7, 10),
        ([(0, 9)], 10, 10),  # everything archived was trimmed already
        ([(0, 9)], 11, None),  # offset 10 was lost
        ([(0, 9), (20, 29)], 20, 30),
    ],
)
def test_contiguous_watermark(
    ranges: list[tuple[int, int]], start: int | None, expected: int | None
) -> None:
    manifests = [_manifest(a, b) for a, b in ranges]
    assert contiguous_watermark((m.offsets for m in manifests), start=start) == expected


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 10)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=8,
    ),
    st.none() | st.integers(0, 70),
)
def test_watermark_is_the_end_of_a_covered_run(
    ranges: list[tuple[int, int]], start: int | None
) -> None:
    watermark = contiguous_watermark(ranges, start=start)

    if watermark is None:
        return
    begin = min(a for a, _ in ranges) if start is None else start
    covered = {o for a, b in ranges for o in range(a, b + 1)}
    assert all(o in covered for o in range(begin, watermark))
    assert watermark not in covered
