"""Tamper evidence: the manifests' hash chain and its anchored head.

Each test alters an archive the way someone with write access to it could - including
rewriting the manifests so that every checksum matches again - and checks that ``verify``
says so. What a consistent rewrite of the whole chain hides, the anchor shows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from runstate.retention import BlobArchive, ChainHead, IssueKind, verify
from runstate.retention.manifest import CHAIN_GENESIS, SegmentManifest, chain_link
from runstate.retention.segment import ArchiveSegment

from .support import SegmentFactory

TOPIC = "runstate.events"
RANGES = [(0, 9), (10, 19), (20, 29), (30, 39), (40, 49)]


def archive(store: BlobArchive, segment_factory: SegmentFactory) -> list[SegmentManifest]:
    return [store.put_segment(segment_factory(a, b)) for a, b in RANGES]


def kinds(store: BlobArchive, **kw: object) -> list[tuple[IssueKind, int, int]]:
    report = verify(store, TOPIC, 0, **kw)  # type: ignore[arg-type]
    return [(i.kind, i.first_offset, i.last_offset) for i in report.issues]


def forge(store: BlobArchive, manifest: SegmentManifest, data: bytes, **update: object) -> None:
    """Replace a segment's body and rewrite its manifest to match it (checksum, size)."""
    fields = {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), **update}
    store._write(manifest.segment_name, data)
    store._write(manifest.manifest_name, manifest.model_copy(update=fields).to_json())


def relink(store: BlobArchive) -> None:
    """Recompute every link, as a forger who knows the scheme would after any change."""
    link = CHAIN_GENESIS
    for m in store.list_manifests(TOPIC, 0):
        link = chain_link(link, m)
        store._write(m.manifest_name, m.model_copy(update={"chain": link}).to_json())


def test_an_archive_written_by_the_store_is_chained(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)

    report = verify(archive_store, TOPIC, 0)

    assert report.ok, report.issues
    assert report.unchained == 0
    link = CHAIN_GENESIS
    for m in published:
        link = chain_link(link, m)
        assert m.chain == link
    assert report.head == ChainHead(TOPIC, 0, 49, link)


def test_expiring_segments_keeps_the_chain(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    head = verify(archive_store, TOPIC, 0).head
    for m in published[:2]:
        archive_store.delete_segment(m, at=datetime(2026, 1, 1, tzinfo=UTC))

    report = verify(archive_store, TOPIC, 0, anchor=head)

    assert report.ok, report.issues
    assert report.expired == 2


def test_a_flipped_byte_is_found_even_with_the_manifest_rewritten(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    data = bytearray(archive_store.fetch_segment(published[1]))
    data[-20] ^= 0x01

    forge(archive_store, published[1], bytes(data))

    assert kinds(archive_store, deep=False) == [(IssueKind.CHAIN, 10, 19)]


def test_a_removed_segment_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    archive_store._delete(published[2].segment_name)
    archive_store._delete(published[2].manifest_name)

    assert kinds(archive_store) == [(IssueKind.GAP, 20, 29), (IssueKind.CHAIN, 30, 39)]


def test_removing_the_first_segment_breaks_the_chain(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    archive_store._delete(published[0].segment_name)
    archive_store._delete(published[0].manifest_name)

    found = kinds(archive_store, start=10)  # even when told the archive starts at 10

    assert found == [(IssueKind.CHAIN, 10, 19)]


def test_removing_the_newest_segment_is_found_by_the_anchor_only(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    anchor = verify(archive_store, TOPIC, 0).head
    archive_store._delete(published[-1].segment_name)
    archive_store._delete(published[-1].manifest_name)

    assert kinds(archive_store) == []  # a shorter chain is consistent in itself
    assert kinds(archive_store, anchor=anchor) == [(IssueKind.CHAIN, 49, 49)]
    assert (
        "no segment ends there" in verify(archive_store, TOPIC, 0, anchor=anchor).issues[0].detail
    )


def test_swapped_segments_are_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    one, two = published[1], published[2]
    body_one, body_two = archive_store.fetch_segment(one), archive_store.fetch_segment(two)

    # Each body under the other's name, manifests rewritten to the swapped checksums.
    forge(archive_store, one, body_two)
    forge(archive_store, two, body_one)

    assert (IssueKind.CHAIN, 10, 19) in kinds(archive_store, deep=False)
    assert (IssueKind.CHAIN, 20, 29) in kinds(archive_store, deep=False)


def test_an_inserted_segment_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    # 10..19 replaced by two segments 10..14 and 15..19 carrying other records.
    archive_store._delete(published[1].segment_name)
    archive_store._delete(published[1].manifest_name)
    for a, b in [(10, 14), (15, 19)]:
        segment: ArchiveSegment = segment_factory(a, b)
        archive_store._write(segment.manifest.segment_name, segment.data)
        previous = archive_store.list_manifests(TOPIC, 0)
        before = max((m for m in previous if m.last_offset < a), key=lambda m: m.last_offset)
        assert before.chain is not None
        chained = segment.manifest.model_copy(
            update={"chain": chain_link(before.chain, segment.manifest)}
        )
        archive_store._write(chained.manifest_name, chained.to_json())

    # The inserted links follow on; the segment after them does not.
    assert kinds(archive_store) == [(IssueKind.CHAIN, 20, 29)]


def test_a_consistent_rewrite_of_the_whole_chain_is_found_by_the_anchor(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    anchor = verify(archive_store, TOPIC, 0).head
    data = bytearray(archive_store.fetch_segment(published[1]))
    data[-20] ^= 0x01
    forge(archive_store, published[1], bytes(data))

    relink(archive_store)

    assert kinds(archive_store, deep=False) == []
    assert kinds(archive_store, deep=False, anchor=anchor) == [(IssueKind.CHAIN, 49, 49)]
    detail = verify(archive_store, TOPIC, 0, deep=False, anchor=anchor).issues[0].detail
    assert "its link differs" in detail


def test_a_link_removed_after_chained_segments_is_found(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    published = archive(archive_store, segment_factory)
    stripped = published[3].model_copy(update={"chain": None})
    archive_store._write(stripped.manifest_name, stripped.to_json())

    found = kinds(archive_store, deep=False)

    # Unchained after chained; and the next link no longer follows from it.
    assert found == [(IssueKind.CHAIN, 30, 39), (IssueKind.CHAIN, 40, 49)]


def test_an_archive_from_before_chaining_continues_with_a_chain(
    archive_store: BlobArchive, segment_factory: SegmentFactory
) -> None:
    # Two segments written by an earlier version: manifests without links.
    for a, b in RANGES[:2]:
        segment = segment_factory(a, b)
        archive_store._write(segment.manifest.segment_name, segment.data)
        archive_store._write(segment.manifest.manifest_name, segment.manifest.to_json())
    for a, b in RANGES[2:]:
        archive_store.put_segment(segment_factory(a, b))

    report = verify(archive_store, TOPIC, 0)

    assert report.ok, report.issues
    assert report.unchained == 2
