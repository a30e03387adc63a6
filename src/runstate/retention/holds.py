"""Legal holds scoped to runs: keep the held runs' records of a segment, expire the rest.

A hold names runs, not segments. When a segment past ``archive_retention`` holds records of
held runs, :func:`split_off_holds` copies those records (and only those) into a *hold
segment*, then expires the segment as usual. The hold segment keeps the segment's covered
range and each record's original offset, so a reader sees the pair as one sparse segment:

* the tombstone accounts for the range (coverage, watermarks, the archiver see nothing
  else) and names the hold segment by checksum (``hold_segment_sha256``);
* the hold segment (``<stem>.hold.avro``, manifest ``hold`` set) holds the held runs'
  records; replay reads it in the tombstone's place, ``verify`` checks it like a segment.

The order of the steps makes every crash harmless: the hold segment is published while the
source is still live (readers prefer a live source and ignore its hold segment), then the
tombstone is written, then the body deleted; the next ``retention apply`` repeats what did
not happen. When every hold a hold segment serves is lifted, it expires like any segment.

A topic that is not archived (``state-changes`` in the example policy) has no segments to
split: Kafka can only delete a partition's oldest offsets, so a held run's records there
would stop every trim. With a ``hold_archive`` in the topic's policy,
:func:`keep_held_before_trim` reads the range a trim is about to delete, writes the held
runs' records into a hold segment covering exactly that range (no source segment:
``source_sha256`` is None) and only then lets the trim go ahead.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from runstate.errors import ArchiveError
from runstate.retention.backends import ArchiveStore
from runstate.retention.kafka_log import KafkaLog
from runstate.retention.manifest import HoldOrigin, SegmentManifest
from runstate.retention.segment import ArchiveSegment, build_segment, key_as_run_id

__all__ = ["archive_chain", "keep_held_before_trim", "split_off_holds"]


def split_off_holds(
    store: ArchiveStore,
    manifest: SegmentManifest,
    holds: frozenset[str],
    *,
    at: datetime,
) -> tuple[SegmentManifest, SegmentManifest]:
    """Keep the held runs' records of ``manifest`` in a hold segment, then expire it.

    Args:
        store: The archive holding the segment.
        manifest: A live segment past its retention, as listed.
        holds: Run ids under legal hold; records keyed by any of them are kept.
        at: Expiry time (the plan's ``now``), also the hold segment's creation time.

    Returns:
        ``(tombstone, hold segment manifest)``.

    Raises:
        ArchiveError: the segment is damaged or unreadable (it is then left as it is: what
            cannot be read cannot be split safely), holds no held run's record, or the
            store refused a write.
    """
    kept = [r for r in store.read_segment(manifest) if key_as_run_id(r) in holds]
    if not kept:
        raise ArchiveError(f"{manifest.segment_name}: no record of a held run; nothing to keep")
    segment = build_segment(
        manifest.topic,
        manifest.partition,
        kept,
        first_offset=manifest.first_offset,
        last_offset=manifest.last_offset,
        created_at=at,
    )
    served = sorted({key_as_run_id(r) or "" for r in kept})
    origin = HoldOrigin(
        holds=served,
        source_sha256=manifest.sha256,
        source_record_count=manifest.record_count,
        held_at=at,
    )
    held = segment.manifest.model_copy(update={"hold": origin})
    published = store.put_hold_segment(
        ArchiveSegment(manifest=held, data=segment.data, run_ids_sidecar=segment.run_ids_sidecar)
    )
    tombstone = store.delete_segment(manifest, at=at, hold_segment=published)
    return tombstone, published


def keep_held_before_trim(
    store: ArchiveStore,
    kafka: KafkaLog,
    topic: str,
    partition: int,
    *,
    low: int,
    trim_to: int,
    holds: frozenset[str],
    at: datetime,
) -> tuple[int, SegmentManifest | None]:
    """Keep the held runs' records of offsets ``low..trim_to - 1`` before Kafka trims them.

    Ranges kept this way follow each other (each starts at Kafka's earliest offset, where
    the previous trim left it), so they never overlap. A hold segment that already starts
    at ``low`` is the work of an apply that stopped before its trim: the trim goes only as
    far as that segment reaches this time, and the next apply continues from there.

    Returns:
        ``(offset Kafka may now be trimmed to, hold segment written or None)``. None when
        the range holds no record of a held run: nothing to keep.

    Raises:
        ArchiveError: the hold segment could not be written (then do not trim).
        BrokerError: Kafka could not be read.
    """
    for existing in store.list_hold_manifests(topic, partition):
        if existing.first_offset <= low <= existing.last_offset:
            return min(trim_to, existing.last_offset + 1), None
    read = 0
    kept = []
    for record in kafka.read_records(topic, partition, start=low, end=trim_to):
        read += 1
        if key_as_run_id(record) in holds:
            kept.append(record)
    if not kept:
        return trim_to, None
    segment = build_segment(
        topic, partition, kept, first_offset=low, last_offset=trim_to - 1, created_at=at
    )
    origin = HoldOrigin(
        holds=sorted({key_as_run_id(r) or "" for r in kept}),
        source_sha256=None,
        source_record_count=read,
        held_at=at,
    )
    held = segment.manifest.model_copy(update={"hold": origin})
    published = store.put_hold_segment(
        ArchiveSegment(manifest=held, data=segment.data, run_ids_sidecar=segment.run_ids_sidecar)
    )
    return trim_to, published


def archive_chain(
    manifests: Iterable[SegmentManifest], hold_manifests: Iterable[SegmentManifest]
) -> list[SegmentManifest]:
    """A partition's manifests as readers use them: hold segments in their tombstones' place.

    A tombstone whose hold segment is live is replaced by the hold segment (same range, the
    held runs' records only). A hold segment beside a live source is ignored: the split was
    interrupted and the source still has every record.

    Raises:
        ArchiveError: a tombstone names a hold segment the store does not have (neither
            live nor expired): the held runs' records are missing; restore the hold
            segment from a copy.
    """
    by_source = {(h.first_offset, h.last_offset, h.sha256): h for h in hold_manifests}
    chain: list[SegmentManifest] = []
    for m in manifests:
        if m.is_live or m.hold_segment_sha256 is None:
            chain.append(m)
            continue
        hold = by_source.get((m.first_offset, m.last_offset, m.hold_segment_sha256))
        if hold is None:
            raise ArchiveError(
                f"{m.manifest_name}: its hold segment ({m.hold_segment_sha256[:12]}…) is"
                " missing, so held runs' records are lost from the archive; restore"
                f" {m.segment_name.removesuffix('.avro')}.hold.* from a copy"
            )
        chain.append(hold if hold.is_live else m)
    return chain
