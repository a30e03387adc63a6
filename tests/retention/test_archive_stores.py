"""The archive stores: every test runs against the local and the S3 (moto server) backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from runstate.errors import ArchiveError
from runstate.retention import (
    ArchiveConfig,
    BlobArchive,
    LocalArchive,
    S3Archive,
    iter_segment,
    open_store,
)
from runstate.retention.manifest import CHAIN_GENESIS, chain_link

from .support import SegmentFactory

TOPIC = "runstate.events"


@contextmanager
def crash_before(store: BlobArchive, suffix: str) -> Iterator[None]:
    """Make the store 'die' right before it writes a blob whose name ends with ``suffix``."""
    real_write = store._write

    def dying_write(name: str, data: bytes) -> None:
        if name.endswith(suffix):
            raise SystemExit("simulated crash")
        real_write(name, data)

    store._write = dying_write  # type: ignore[method-assign]
    try:
        with pytest.raises(SystemExit):
            yield
    finally:
        store._write = real_write  # type: ignore[method-assign]


def test_put_list_read_round_trip(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    segments = [segment_factory(a, b) for a, b in [(20, 29), (0, 9), (10, 19)]]
    published = [archive_store.put_segment(segment) for segment in segments]
    # The store adds the chain link, and nothing else.
    assert [m.model_copy(update={"chain": None}) for m in published] == [
        s.manifest for s in segments
    ]

    listed = archive_store.list_manifests(TOPIC, 0)

    assert [(m.first_offset, m.last_offset) for m in listed] == [(0, 9), (10, 19), (20, 29)]
    assert listed == sorted(published, key=lambda m: m.first_offset)
    by_offset = {s.manifest.first_offset: s for s in segments}
    for manifest in listed:
        expected = list(iter_segment(by_offset[manifest.first_offset].data))
        assert list(archive_store.read_segment(manifest)) == expected
        assert archive_store.fetch_segment(manifest) == by_offset[manifest.first_offset].data


def test_partitions_are_kept_apart(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 4, partition=3))
    archive_store.put_segment(segment_factory(0, 4, partition=11))
    archive_store.put_segment(segment_factory(0, 4, topic="runstate.state-changes"))

    assert archive_store.partitions(TOPIC) == [3, 11]
    assert archive_store.partitions("nothing-here") == []
    assert [m.partition for m in archive_store.list_manifests(TOPIC, 11)] == [11]
    assert archive_store.list_manifests(TOPIC, 0) == []


def test_crash_before_manifest_leaves_nothing_visible_and_retry_succeeds(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 9))
    with crash_before(archive_store, ".manifest.json"):
        archive_store.put_segment(segment_factory(10, 19))

    assert [m.last_offset for m in archive_store.list_manifests(TOPIC, 0)] == [9]
    assert archive_store.archived_watermark(TOPIC, 0) == 10
    assert archive_store.orphans(TOPIC, 0) == [
        "runstate.events/00000/00000000000000000010-00000000000000000019.avro"
    ]

    retried = archive_store.put_segment(segment_factory(10, 19))

    assert archive_store.list_manifests(TOPIC, 0)[-1] == retried
    assert archive_store.orphans(TOPIC, 0) == []
    assert archive_store.archived_watermark(TOPIC, 0) == 20


def test_retry_with_a_different_range_removes_the_orphan(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    with crash_before(archive_store, ".manifest.json"):
        archive_store.put_segment(segment_factory(0, 9, run_ids_inline_limit=0))
    assert len(archive_store.orphans(TOPIC, 0)) == 2  # body and run-ids sidecar

    archive_store.put_segment(segment_factory(0, 14))

    assert archive_store.orphans(TOPIC, 0) == []
    assert archive_store.archived_watermark(TOPIC, 0) == 15


def test_crash_before_sidecar_is_invisible_too(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    segment = segment_factory(0, 9, run_ids_inline_limit=0)
    with crash_before(archive_store, ".run_ids.json.gz"):
        archive_store.put_segment(segment)
    assert archive_store.list_manifests(TOPIC, 0) == []

    archive_store.put_segment(segment)

    assert archive_store.run_ids(segment.manifest) == {"run-0"}


def test_republishing_the_same_range_is_idempotent(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    archive_store.put_segment(segment_factory(0, 9))
    again = segment_factory(0, 9)

    archive_store.put_segment(again)

    link = chain_link(CHAIN_GENESIS, again.manifest)
    assert archive_store.list_manifests(TOPIC, 0) == [
        again.manifest.model_copy(update={"chain": link})
    ]


@pytest.mark.parametrize(("first", "last"), [(5, 14), (0, 4), (9, 9), (0, 19)])
def test_overlapping_segments_are_refused(
    archive_store: BlobArchive, segment_factory: SegmentFactory, first: int, last: int
) -> None:
    archive_store.put_segment(segment_factory(0, 9))

    with pytest.raises(ArchiveError, match=r"overlaps published 0\.\.9"):
        archive_store.put_segment(segment_factory(first, last))
    assert len(archive_store.list_manifests(TOPIC, 0)) == 1


def test_inconsistent_segments_are_refused(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    good = segment_factory(0, 9)
    with pytest.raises(ArchiveError, match="checksum or size"):
        archive_store.put_segment(type(good)(good.manifest, good.data + b"x"))
    big = segment_factory(0, 9, run_ids_inline_limit=0)
    with pytest.raises(ArchiveError, match="sidecar missing"):
        archive_store.put_segment(type(big)(big.manifest, big.data, None))
    assert archive_store.list_manifests(TOPIC, 0) == []


def test_reads_check_the_checksum(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    segment = segment_factory(0, 9)
    archive_store.put_segment(segment)
    damaged = bytearray(segment.data)
    damaged[len(damaged) // 2] ^= 0xFF
    archive_store._write(segment.manifest.segment_name, bytes(damaged))

    with pytest.raises(ArchiveError, match="checksum mismatch"):
        list(archive_store.read_segment(segment.manifest))


def test_missing_segment_is_reported(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    segment = segment_factory(0, 9)
    archive_store.put_segment(segment)
    archive_store._delete(segment.manifest.segment_name)

    with pytest.raises(ArchiveError, match="is missing"):
        list(archive_store.read_segment(segment.manifest))


def test_run_ids_inline_and_from_sidecar(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    inline = archive_store.put_segment(segment_factory(0, 19))
    sidecar = archive_store.put_segment(segment_factory(20, 39, run_ids_inline_limit=1))

    assert archive_store.run_ids(inline) == {"run-0", "run-1"}
    assert sidecar.run_ids is None
    assert archive_store.run_ids(sidecar) == {"run-2", "run-3"}

    archive_store._write(sidecar.sidecar_name, b"garbage")
    with pytest.raises(ArchiveError, match="checksum mismatch"):
        archive_store.run_ids(sidecar)


def test_delete_leaves_a_tombstone_that_keeps_the_range_covered(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    first = archive_store.put_segment(segment_factory(0, 9, run_ids_inline_limit=0))
    archive_store.put_segment(segment_factory(10, 19))
    at = datetime(2026, 1, 1, tzinfo=UTC)

    tombstone = archive_store.delete_segment(first, at=at)

    assert tombstone.expired_at == at and not tombstone.is_live
    assert tombstone.run_ids is None and tombstone.run_ids_sidecar is None
    assert archive_store.list_manifests(TOPIC, 0)[0] == tombstone
    assert archive_store.orphans(TOPIC, 0) == []
    assert archive_store.archived_watermark(TOPIC, 0) == 20
    assert archive_store.run_ids(tombstone) == frozenset()
    with pytest.raises(ArchiveError, match="expired at"):
        list(archive_store.read_segment(tombstone))
    # Deleting again is harmless; archiving the expired range again is refused.
    assert archive_store.delete_segment(tombstone) == tombstone
    with pytest.raises(ArchiveError, match="not archived again"):
        archive_store.put_segment(segment_factory(0, 9))


def test_delete_refuses_a_stale_manifest(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    old = segment_factory(0, 9).manifest
    archive_store.put_segment(segment_factory(0, 9))  # same range, new bytes

    with pytest.raises(ArchiveError, match="changed since it was listed"):
        archive_store.delete_segment(old)
    assert archive_store.list_manifests(TOPIC, 0)[0].is_live


@pytest.mark.parametrize(
    ("ranges", "start", "expected"),
    [
        ([], None, None),
        ([(0, 9), (10, 19)], None, 20),
        ([(0, 9), (20, 29)], None, 10),
        ([(100, 109), (110, 119)], None, 120),
        ([(100, 109), (110, 119)], 50, None),
        ([(100, 109), (110, 119)], 105, 120),
    ],
)
def test_archived_watermark(
    archive_store: BlobArchive,
    segment_factory: SegmentFactory,
    ranges: list[tuple[int, int]],
    start: int | None,
    expected: int | None,
) -> None:
    for a, b in ranges:
        archive_store.put_segment(segment_factory(a, b))

    assert archive_store.archived_watermark(TOPIC, 0, start=start) == expected


def test_a_manifest_filed_elsewhere_is_an_error(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    manifest = segment_factory(0, 9, partition=1).manifest
    archive_store._write(
        "runstate.events/00002/00000000000000000000-00000000000000000009.manifest.json",
        manifest.to_json(),
    )

    with pytest.raises(ArchiveError, match="move it back"):
        archive_store.list_manifests(TOPIC, 2)


def test_local_temp_files_are_ignored_and_cleaned(
    tmp_path: Path, segment_factory: SegmentFactory
) -> None:
    store = LocalArchive(tmp_path)
    directory = tmp_path / "runstate.events" / "00000"
    directory.mkdir(parents=True)
    stale = directory / "00000000000000000000-00000000000000000009.avro.deadbeef.tmp"
    stale.write_bytes(b"half a segm")

    assert store.list_manifests(TOPIC, 0) == []
    store.put_segment(segment_factory(0, 9))

    assert not stale.exists()
    assert sorted(p.name for p in directory.iterdir()) == [
        "00000000000000000000-00000000000000000009.avro",
        "00000000000000000000-00000000000000000009.manifest.json",
    ]


def test_s3_layout_uses_the_prefix(
    s3_endpoint: str, s3_bucket: str, segment_factory: SegmentFactory
) -> None:
    store = S3Archive(s3_bucket, "/compliance/", endpoint_url=s3_endpoint)
    store.put_segment(segment_factory(0, 9))
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )

    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]

    assert store.location == f"s3://{s3_bucket}/compliance"
    assert sorted(keys) == [
        "compliance/runstate.events/00000/00000000000000000000-00000000000000000009.avro",
        "compliance/runstate.events/00000/00000000000000000000-00000000000000000009.manifest.json",
    ]


def test_s3_listing_follows_pages(
    s3_endpoint: str, s3_bucket: str, segment_factory: SegmentFactory
) -> None:
    store = S3Archive(s3_bucket, endpoint_url=s3_endpoint, list_page_size=2)
    for a in range(0, 50, 10):
        store.put_segment(segment_factory(a, a + 9, partition=a // 10))
        store.put_segment(segment_factory(a + 100, a + 109))

    assert [m.first_offset for m in store.list_manifests(TOPIC, 0)] == [0, 100, 110, 120, 130, 140]
    assert store.partitions(TOPIC) == [0, 1, 2, 3, 4]


def test_s3_failures_become_archive_errors(
    s3_endpoint: str, segment_factory: SegmentFactory
) -> None:
    missing_bucket = S3Archive("no-such-bucket", endpoint_url=s3_endpoint)
    with pytest.raises(ArchiveError, match="s3://no-such-bucket"):
        missing_bucket.put_segment(segment_factory(0, 9))

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    unreachable = S3Archive("bucket", client=client)
    with pytest.raises(ArchiveError, match="check the endpoint"):
        unreachable.list_manifests(TOPIC, 0)


def test_open_store_follows_the_policy_target(tmp_path: Path, s3_endpoint: str) -> None:
    local = open_store(ArchiveConfig(target=f"local:{tmp_path}"))
    remote = open_store(ArchiveConfig(target="s3://bucket/some/prefix", endpoint=s3_endpoint))

    assert isinstance(local, LocalArchive) and local.root == tmp_path
    assert isinstance(remote, S3Archive)
    assert (remote.bucket, remote.prefix, remote.endpoint_url) == (
        "bucket",
        "some/prefix",
        s3_endpoint,
    )
