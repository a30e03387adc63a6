"""``apply_retention`` under legal holds on a topic that is not archived, partition by partition.

A hold can be placed between ``retention plan`` and ``retention apply``; the apply reads
the holds as they stand, and one partition it must refuse never stops the others.
"""

from __future__ import annotations

from pathlib import Path

from runstate.errors import ArchiveError
from runstate.retention import ArchiveSegment, LocalArchive, SegmentManifest
from runstate.retention.apply import apply_retention, plan_retention

from .support import HOLD_NAMES, HOLD_NOW, HOLD_RUNS, T0_MS, MemoryKafka, hold_context

CHANGES = HOLD_NAMES.state_changes
OFFSETS = 30


def two_partitions() -> MemoryKafka:
    offsets = range(OFFSETS)
    return MemoryKafka(
        CHANGES,
        {p: {o: T0_MS + o * 1000 for o in offsets} for p in (0, 1)},
        deleted={0: 0, 1: 0},
        keys={p: {o: HOLD_RUNS[o % 3].encode() for o in offsets} for p in (0, 1)},
    )


def test_a_hold_placed_after_the_plan_stops_every_partition_without_a_hold_archive(
    tmp_path: Path,
) -> None:
    store = LocalArchive(tmp_path)
    kafka = two_partitions()
    free = hold_context(store, holds=(), hold_archive=False)
    plan = plan_retention(free, kafka, now=HOLD_NOW, topics=["state-changes"])
    assert [t.plan.trim_to for t in plan.trims] == [OFFSETS, OFFSETS]

    held = hold_context(store, holds=("run-held",), hold_archive=False)
    outcome = apply_retention(held, kafka, plan)

    assert outcome.trimmed == {}
    assert kafka.deleted == {0: 0, 1: 0}
    assert outcome.refused == [
        f"{CHANGES}/{p}: not trimmed, legal holds are active and the topic has no"
        " hold_archive to keep held runs' records in"
        for p in (0, 1)
    ]


class RefusingHolds(LocalArchive):
    """A store that cannot write the hold segment of one partition (a full disk, a denied put)."""

    def put_hold_segment(self, segment: ArchiveSegment) -> SegmentManifest:
        if segment.manifest.partition == 0:
            raise ArchiveError("hold archive refused the write")
        return super().put_hold_segment(segment)


def test_a_partition_whose_held_records_cannot_be_kept_is_not_trimmed_the_others_are(
    tmp_path: Path,
) -> None:
    store = RefusingHolds(tmp_path)
    kafka = two_partitions()
    context = hold_context(store, holds=("run-held",))
    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["state-changes"])

    outcome = apply_retention(context, kafka, plan)

    assert outcome.refused == [
        f"{CHANGES}/0: not trimmed, held runs' records could not be kept:"
        " hold archive refused the write"
    ]
    assert outcome.trimmed == {(CHANGES, 1): OFFSETS}
    assert kafka.deleted == {0: 0, 1: OFFSETS}
    (kept,) = outcome.hold_segments
    assert (kept.partition, kept.offsets) == (1, (0, OFFSETS - 1))


def test_a_partition_trimmed_since_the_plan_is_skipped_and_the_others_trimmed(
    tmp_path: Path,
) -> None:
    """Another apply of the same plan got to partition 0 first: nothing is left to keep."""
    store = LocalArchive(tmp_path)
    kafka = two_partitions()
    context = hold_context(store, holds=("run-held",))
    plan = plan_retention(context, kafka, now=HOLD_NOW, topics=["state-changes"])
    kafka.deleted[0] = OFFSETS

    outcome = apply_retention(context, kafka, plan)

    assert outcome.ok, outcome.refused
    assert outcome.trimmed == {(CHANGES, 1): OFFSETS}
    assert [h.partition for h in outcome.hold_segments] == [1]
