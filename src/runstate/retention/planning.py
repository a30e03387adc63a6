"""Retention planning: what may leave Kafka, and what may leave the archive. Pure functions.

Planning reads numbers and manifests and returns plans; carrying them out (Kafka
``delete_records``, ``ArchiveStore.delete_segment``) is the caller's job. Keeping the
decisions pure lets them be tested exhaustively and printed as a dry run before anything is
deleted.

The rule that matters most: a trim never passes the archived watermark, so Kafka deletes
only what the archive already holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from runstate.errors import ArchiveError
from runstate.retention.manifest import SegmentManifest
from runstate.retention.policy import RetentionPolicy, format_duration

__all__ = ["ExpiryPlan", "HeldSegment", "OffsetForTime", "TrimPlan", "plan_expiry", "plan_trim"]

#: ``timestamp_ms -> offset``: the earliest offset whose timestamp is at or after the given
#: time, or the log end offset when every record is older (Kafka's ``offsets_for_times``,
#: with "none" mapped to the end offset).
OffsetForTime = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """How far to trim one partition in Kafka.

    Attributes:
        trim_to: Delete offsets below this (``delete_records(before_offset=trim_to)``), or
            None to leave the partition alone.
        reason: Why this point, for dry-run output and logs.
    """

    topic: str
    partition: int
    earliest_offset: int
    trim_to: int | None
    reason: str

    @property
    def deletes(self) -> int:
        """Number of offsets the trim removes (records may be fewer: markers take offsets)."""
        return 0 if self.trim_to is None else self.trim_to - self.earliest_offset


def plan_trim(
    policy: RetentionPolicy,
    topic: str,
    partition: int,
    *,
    earliest_offset: int,
    archived_watermark: int | None,
    offset_for_time: OffsetForTime,
    now: datetime,
) -> TrimPlan:
    """Where to trim a partition: ``min(first offset still hot, archived watermark)``.

    Args:
        policy: The retention policy.
        topic: Topic of the partition.
        partition: The partition.
        earliest_offset: Kafka's current log start offset for the partition.
        archived_watermark: Next offset not archived, from a contiguous archived run that
            reaches ``earliest_offset``: ``store.archived_watermark(topic, partition,
            start=earliest_offset)``. A watermark from a run starting above
            ``earliest_offset`` would let the trim delete never-archived offsets.
        offset_for_time: Kafka's time index, see :data:`OffsetForTime`.
        now: The current time (aware); passed in so plans are reproducible.

    Returns:
        The plan. ``trim_to`` is never above the watermark when the topic is archived, never
        above the first offset still inside the hot window, and always above
        ``earliest_offset`` (otherwise it is None).

    Raises:
        PolicyError: the topic has no policy.
    """
    rules = policy.topic(topic)
    cutoff_ms = int((now - rules.hot).timestamp() * 1000)
    hot_start = offset_for_time(cutoff_ms)
    target, reason = (
        hot_start,
        f"events before offset {hot_start} are older than hot ({format_duration(rules.hot)})",
    )
    if rules.archived:
        if archived_watermark is None:
            target, reason = earliest_offset, "nothing archived reaches the earliest offset"
        elif archived_watermark < target:
            target = archived_watermark
            reason = f"archived up to offset {archived_watermark}; the rest waits for the archiver"
    elif policy.legal_holds and rules.hold_archive is None:
        target = earliest_offset
        reason = (
            "legal holds are active and the topic is neither archived nor has a"
            " hold_archive to keep held runs' records in; nothing is trimmed"
        )
    elif policy.legal_holds:
        reason += "; held runs' records are kept in the hold archive first"
    if target <= earliest_offset:
        return TrimPlan(topic, partition, earliest_offset, None, f"nothing to trim: {reason}")
    return TrimPlan(topic, partition, earliest_offset, target, reason)


@dataclass(frozen=True, slots=True)
class HeldSegment:
    """An expired segment kept back, and why."""

    manifest: SegmentManifest
    reason: str
    held_run_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ExpiryPlan:
    """Archive segments past ``archive_retention``: what goes, what is split, what stays.

    Attributes:
        expire: Segments (and hold segments whose holds were all lifted) to delete whole.
        held: Segments kept whole: every run in them is held, their run ids are unreadable,
            or they are hold segments still serving a hold.
        split: Segments holding both held and other runs' records: the held runs' records
            move to a hold segment (``holds.split_off_holds``), the segment expires.
    """

    topic: str
    partition: int
    expire: tuple[SegmentManifest, ...]
    held: tuple[HeldSegment, ...]
    split: tuple[HeldSegment, ...] = ()


def plan_expiry(
    policy: RetentionPolicy,
    topic: str,
    partition: int,
    manifests: Iterable[SegmentManifest],
    *,
    now: datetime,
    run_ids_of: Callable[[SegmentManifest], frozenset[str]],
) -> ExpiryPlan:
    """Which live segments are past ``archive_retention``, and what legal holds keep of them.

    A segment expires when its *latest* record is older than the retention, so no record
    leaves the archive early. Deleting one leaves a tombstone (``delete_segment``), so
    held segments between deleted ones do not break the archived watermark. A hold keeps
    only its runs' records: a segment mixing held and other runs is *split* (the held
    records go to a hold segment, the rest expires), a segment of held runs only is kept
    whole, and a hold segment expires once none of its runs is held any more (one cut
    from Kafka for a topic that is not archived at once, whatever ``archive_retention``).

    Args:
        manifests: The partition's manifests, hold segments' included (tombstones are
            skipped).
        now: The current time (aware).
        run_ids_of: Run ids of a segment, usually ``store.run_ids``; called only for
            expired segments and only when there are legal holds or hold segments. If it
            raises ArchiveError (damaged sidecar), the segment is held whole: unknown
            contents might belong to a held run.

    Raises:
        PolicyError: the topic has no policy.
    """
    rules = policy.topic(topic)
    cutoff = None if rules.archive_retention is None else now - rules.archive_retention
    holds = policy.held_run_ids
    expire: list[SegmentManifest] = []
    held: list[HeldSegment] = []
    split: list[HeldSegment] = []
    for m in sorted(manifests, key=lambda m: (m.first_offset, m.is_hold)):
        # Cut from Kafka for a topic that is not archived: kept for its holds alone.
        from_kafka = m.hold is not None and m.hold.source_sha256 is None
        if not m.is_live or (not from_kafka and (cutoff is None or m.last_timestamp >= cutoff)):
            continue
        if holds or m.is_hold:
            try:
                runs = run_ids_of(m)
            except ArchiveError as exc:
                held.append(HeldSegment(m, f"run ids unreadable, kept to be safe: {exc}"))
                continue
            hit = runs & holds
            if hit and m.is_hold:
                held.append(HeldSegment(m, f"hold segment for {', '.join(sorted(hit))}", hit))
                continue
            if hit and runs <= holds:
                held.append(HeldSegment(m, f"legal hold on {', '.join(sorted(hit))}", hit))
                continue
            if hit:
                reason = f"records of {', '.join(sorted(hit))} kept in a hold segment"
                split.append(HeldSegment(m, reason, hit))
                continue
        expire.append(m)
    return ExpiryPlan(topic, partition, tuple(expire), tuple(held), tuple(split))
