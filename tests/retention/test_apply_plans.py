"""``plan_retention`` and ``apply_retention`` figure by figure, over the in-memory Kafka.

What each partition's plan samples and estimates, the notes, the archive re-read from
Kafka's earliest offset before a trim, and the expiry of split segments one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runstate.retention import LocalArchive, TrimPlan, build_segment
from runstate.retention.apply import (
    SIZE_SAMPLE,
    PartitionTrim,
    RetentionPlan,
    apply_retention,
    plan_retention,
)
from runstate.retention.kafka_log import SizeSample

from .support import (
    HOLD_NAMES,
    HOLD_NOW,
    T0_MS,
    MemoryKafka,
    RecordFactory,
    hold_context,
)

EVENTS = HOLD_NAMES.events
CHANGES = HOLD_NAMES.state_changes


@dataclass
class SampledKafka(MemoryKafka):
    """Records 100 bytes long in partition 0, 200 in partition 1; remembers each sample."""

    samples: list[tuple[int, int, int]] = field(default_factory=list)

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        self._only(topic)
        self.samples.append((partition, start, limit))
        return SizeSample(10, 1000 * (partition + 1))


def two_partitions(topic: str, *, low_1: int = 10) -> SampledKafka:
    return SampledKafka(
        topic,
        {p: {o: T0_MS + o * 1000 for o in range(30)} for p in (0, 1)},
        deleted={0: 0, 1: low_1},
    )


def test_each_partition_is_sampled_from_its_earliest_offset(tmp_path: Path) -> None:
    kafka = two_partitions(CHANGES)
    context = hold_context(LocalArchive(tmp_path), holds=())

    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["state-changes"])

    assert kafka.samples == [(0, 0, SIZE_SAMPLE), (1, 10, SIZE_SAMPLE)]
    assert [(t.plan.partition, t.plan.trim_to, t.estimated_bytes) for t in plan.trims] == [
        (0, 30, 30 * 100),
        (1, 30, 20 * 200),
    ]
    assert plan.notes == ()


def test_a_partition_with_nothing_to_trim_is_not_sampled(tmp_path: Path) -> None:
    kafka = two_partitions(CHANGES, low_1=30)
    context = hold_context(LocalArchive(tmp_path), holds=())

    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["state-changes"])
    unsampled = plan_retention(context, kafka, now=HOLD_NOW, topics=["state-changes"], sample=False)

    assert kafka.samples == [(0, 0, SIZE_SAMPLE)]
    assert [t.estimated_bytes for t in plan.trims] == [3000, None]
    assert [t.estimated_bytes for t in unsampled.trims] == [None, None]


def test_a_topic_kafka_lacks_gets_a_note(tmp_path: Path) -> None:
    kafka = two_partitions(CHANGES)
    context = hold_context(LocalArchive(tmp_path), holds=())

    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["events"])

    assert plan.trims == ()
    assert plan.notes == (f"{EVENTS}: not in Kafka; nothing to trim",)


def test_an_archive_that_starts_above_kafkas_earliest_offset_backs_no_trim(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    """0..14 are in neither: a watermark counted from the archive's own start is no licence."""
    store = LocalArchive(tmp_path)
    store.put_segment(build_segment(EVENTS, 0, record_factory(range(15, 30))))
    kafka = MemoryKafka(EVENTS, {0: {o: T0_MS + o * 1000 for o in range(30)}})
    context = hold_context(store, holds=())

    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["events"])
    assert [(t.plan.trim_to, t.archived_watermark) for t in plan.trims] == [(None, None)]

    by_hand = RetentionPlan(
        HOLD_NOW, (PartitionTrim(TrimPlan(EVENTS, 0, 0, 30, "by hand"), 30, 30),), ()
    )
    outcome = apply_retention(context, kafka, by_hand)

    assert outcome.trimmed == {} and kafka.deleted == {}
    assert outcome.refused == [
        f"{EVENTS}/0: trim to 30 refused, the archive now holds only up to None (from 0);"
        " run `runstate archive verify`"
    ]


def test_expired_and_split_segments_each_leave_a_tombstone_at_the_plans_time(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    store = LocalArchive(tmp_path)
    mixed = ["run-held", "run-a"] * 5
    for first, runs in [(0, ["run-a"] * 10), (10, mixed), (20, mixed)]:
        records = record_factory(range(first, first + 10), run_ids=runs)
        store.put_segment(build_segment(EVENTS, 0, records))
    context = hold_context(store, holds=("run-held",))
    kafka = MemoryKafka(EVENTS, {0: {o: T0_MS + o * 1000 for o in range(30)}})
    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["events"])
    (expiry,) = plan.expiries
    assert (expiry.topic, expiry.partition) == (EVENTS, 0)
    assert [m.first_offset for m in expiry.expire] == [0]
    damaged, sound = (h.manifest for h in expiry.split)
    store._write(damaged.segment_name, b"damaged")

    outcome = apply_retention(context, kafka, plan)

    assert [(m.first_offset, m.expired_at) for m in outcome.expired] == [
        (0, HOLD_NOW),
        (20, HOLD_NOW),
    ]
    assert [(h.first_offset, h.is_hold) for h in outcome.hold_segments] == [(20, True)]
    assert len(outcome.refused) == 1
    assert outcome.refused[0].startswith(f"{damaged.segment_name}: not expired: ")
    assert sound.first_offset == 20
