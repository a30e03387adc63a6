"""``retention plan`` and ``retention apply``: carry out the pure plans against Kafka and the
archive.

:mod:`runstate.retention.planning` decides; this module gathers the numbers the decisions need
(watermarks, the time index, manifests), prints what would happen, and does it. The rule
that matters most is enforced twice: the plan never trims past the archived watermark, and
:func:`apply_retention` re-reads the watermark right before ``DeleteRecords`` and refuses a
trim the archive no longer backs (a segment deleted by hand, a store swapped under it).

Bytes trimmed from Kafka are an estimate (offsets to trim times the mean payload size of a
sample of them): Kafka has no cheap per-range size. Archive bytes are exact (manifests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from runstate.errors import ArchiveError
from runstate.retention.context import RetentionContext
from runstate.retention.holds import keep_held_before_trim, split_off_holds
from runstate.retention.kafka_log import KafkaLog
from runstate.retention.manifest import SegmentManifest
from runstate.retention.planning import ExpiryPlan, TrimPlan, plan_expiry, plan_trim

__all__ = [
    "PartitionTrim",
    "RetentionOutcome",
    "RetentionPlan",
    "apply_retention",
    "plan_retention",
    "retention_steps",
]

#: Records read per partition to estimate the bytes a trim frees.
SIZE_SAMPLE = 200


@dataclass(frozen=True, slots=True)
class PartitionTrim:
    """A trim plan with the figures a person checks before applying it.

    Attributes:
        plan: Where to trim and why.
        end_offset: The partition's end offset when planned.
        archived_watermark: Next unarchived offset (None: not archived, or nothing reaches
            the earliest offset).
        estimated_bytes: Payload bytes the trim frees, from a sample; None if not sampled.
    """

    plan: TrimPlan
    end_offset: int
    archived_watermark: int | None
    estimated_bytes: int | None = None


@dataclass(frozen=True)
class RetentionPlan:
    """Everything ``retention apply`` would do, computed at ``now``."""

    now: datetime
    trims: tuple[PartitionTrim, ...]
    expiries: tuple[ExpiryPlan, ...]
    notes: tuple[str, ...] = ()

    @property
    def offsets_to_trim(self) -> int:
        return sum(t.plan.deletes for t in self.trims)

    @property
    def bytes_to_trim(self) -> int:
        return sum(t.estimated_bytes or 0 for t in self.trims)

    @property
    def segments_to_expire(self) -> list[SegmentManifest]:
        return [m for e in self.expiries for m in e.expire]

    @property
    def segments_to_split(self) -> list[SegmentManifest]:
        """Segments whose held runs' records move to a hold segment before they expire."""
        return [h.manifest for e in self.expiries for h in e.split]

    @property
    def records_to_expire(self) -> int:
        return sum(m.record_count for m in self.segments_to_expire)

    @property
    def bytes_to_expire(self) -> int:
        return sum(m.size_bytes for m in self.segments_to_expire)


@dataclass
class RetentionOutcome:
    """What :func:`apply_retention` did; ``refused`` lists trims it would not do, and why."""

    trimmed: dict[tuple[str, int], int] = field(default_factory=dict)
    expired: list[SegmentManifest] = field(default_factory=list)
    #: Hold segments written for split segments (their sources are in ``expired``).
    hold_segments: list[SegmentManifest] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused


def plan_retention(
    context: RetentionContext,
    kafka: KafkaLog,
    *,
    now: datetime,
    topics: list[str] | None = None,
    sample: bool = True,
) -> RetentionPlan:
    """The retention plan for every topic of the policy (or ``topics``) at ``now``.

    Topics the policy names but Kafka lacks are skipped with a note; their archives are
    still planned for expiry.

    Raises:
        PolicyError: a topic in ``topics`` has no policy.
        ArchiveError: an archive cannot be listed.
        BrokerError: Kafka cannot be reached.
    """
    policy = context.policy
    wanted = [context.resolve(t) for t in topics] if topics else list(policy.topics)
    existing = kafka.topics()
    trims: list[PartitionTrim] = []
    expiries: list[ExpiryPlan] = []
    notes: list[str] = []
    for topic in wanted:
        rules = policy.topic(topic)
        store = context.store(topic) if rules.archived else None
        if topic not in existing:
            notes.append(f"{topic}: not in Kafka; nothing to trim")
        else:
            for partition, (low, high) in sorted(kafka.watermarks(topic).items()):
                watermark = store.archived_watermark(topic, partition, start=low) if store else None
                plan = plan_trim(
                    policy,
                    topic,
                    partition,
                    earliest_offset=low,
                    archived_watermark=watermark,
                    offset_for_time=functools.partial(kafka.offset_for_time, topic, partition),
                    now=now,
                )
                estimate = None
                if sample and plan.deletes:
                    sizes = kafka.sample_sizes(topic, partition, start=low, limit=SIZE_SAMPLE)
                    estimate = round(sizes.mean * plan.deletes)
                trims.append(PartitionTrim(plan, high, watermark, estimate))
        if store is None and rules.hold_archive is not None:
            store = context.hold_store(topic)
        if store is not None:
            for partition in store.partitions(topic):
                expiries.append(
                    plan_expiry(
                        policy,
                        topic,
                        partition,
                        [
                            *store.list_manifests(topic, partition),
                            *store.list_hold_manifests(topic, partition),
                        ],
                        now=now,
                        run_ids_of=store.run_ids,
                    )
                )
    return RetentionPlan(now, tuple(trims), tuple(expiries), tuple(notes))


def retention_steps(plan: RetentionPlan) -> int:
    """How many times :func:`apply_retention` calls its ``on_step`` for ``plan``."""
    return len(plan.trims) + sum(len(e.expire) + len(e.split) for e in plan.expiries)


def _no_step() -> None:
    pass


def apply_retention(
    context: RetentionContext,
    kafka: KafkaLog,
    plan: RetentionPlan,
    *,
    on_step: Callable[[], None] | None = None,
) -> RetentionOutcome:
    """Trim Kafka and expire archive segments as ``plan`` says, re-checking the archive.

    Before each ``DeleteRecords`` the archived watermark is read again from the store; a
    trim above it is refused (reported in the outcome, nothing deleted for that partition).
    Segments are expired after the trims, each leaving a tombstone manifest; a segment the
    plan splits first has its held runs' records copied into a hold segment, with the
    holds as they stand in the policy now. A topic that is not archived is trimmed under
    legal holds only after the held runs' records of the range are kept in its
    ``hold_archive`` (``holds.keep_held_before_trim``); without one it is not trimmed.

    ``on_step`` is called once per trim and per segment expiry of the plan, as each is
    taken up (the CLI's progress bar; :func:`retention_steps` of them in all).

    Raises:
        ArchiveError: the archive cannot be read or a segment cannot be deleted.
        KafkaException: the broker refused ``DeleteRecords``.
    """
    step = on_step or _no_step
    outcome = RetentionOutcome()
    holds = context.policy.held_run_ids
    by_topic: dict[str, dict[int, int]] = {}
    for trim in plan.trims:
        step()
        target = trim.plan.trim_to
        if target is None:
            continue
        topic, partition = trim.plan.topic, trim.plan.partition
        rules = context.policy.topic(topic)
        if not rules.archived and holds:
            if rules.hold_archive is None:
                outcome.refused.append(
                    f"{topic}/{partition}: not trimmed, legal holds are active and the topic"
                    " has no hold_archive to keep held runs' records in"
                )
                continue
            low = kafka.watermarks(topic)[partition][0]
            try:
                target, kept = keep_held_before_trim(
                    context.hold_store(topic),
                    kafka,
                    topic,
                    partition,
                    low=low,
                    trim_to=target,
                    holds=holds,
                    at=plan.now,
                )
            except ArchiveError as exc:
                outcome.refused.append(
                    f"{topic}/{partition}: not trimmed, held runs' records could not be kept: {exc}"
                )
                continue
            if kept is not None:
                outcome.hold_segments.append(kept)
            if target <= low:
                continue
        if rules.archived:
            store = context.store(topic)
            low = kafka.watermarks(topic)[partition][0]
            watermark = store.archived_watermark(topic, partition, start=low)
            if watermark is None or target > watermark:
                outcome.refused.append(
                    f"{topic}/{partition}: trim to {target} refused, the archive now holds"
                    f" only up to {watermark} (from {low}); run `runstate archive verify`"
                )
                continue
        by_topic.setdefault(topic, {})[partition] = target
    for topic, before in by_topic.items():
        for partition, low in kafka.delete_records(topic, before).items():
            outcome.trimmed[(topic, partition)] = low
    for expiry in plan.expiries:
        store = context.hold_store(expiry.topic)
        for manifest in expiry.expire:
            step()
            try:
                outcome.expired.append(store.delete_segment(manifest, at=plan.now))
            except ArchiveError as exc:
                outcome.refused.append(f"{manifest.segment_name}: not expired: {exc}")
        for split in expiry.split:
            step()
            try:
                tombstone, kept = split_off_holds(store, split.manifest, holds, at=plan.now)
            except ArchiveError as exc:
                outcome.refused.append(f"{split.manifest.segment_name}: not expired: {exc}")
                continue
            outcome.expired.append(tombstone)
            outcome.hold_segments.append(kept)
    return outcome
