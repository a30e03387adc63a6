"""Retention plans field by field: what ``retention plan`` prints and ``apply`` acts on.

The property test in ``test_retention_planning.py`` proves where a trim may go; these check
the rest of each plan (which partition, why, which hold keeps what) and the time index's
cutoff, exactly.
"""

from __future__ import annotations

from datetime import timedelta

from runstate.errors import ArchiveError
from runstate.retention import SegmentManifest, TrimPlan, parse_policy, plan_expiry, plan_trim
from runstate.retention.manifest import HoldOrigin
from runstate.retention.planning import HeldSegment

from .support import SegmentFactory
from .test_retention_planning import NOW, make_policy, manifest_at, now_ms

HOT_CUTOFF_MS = now_ms - 7 * 86_400_000


def trim(
    policy_yaml: str | None = None, *, earliest: int = 100, watermark: int | None = 200
) -> tuple[TrimPlan, list[int]]:
    asked: list[int] = []

    def index(ts_ms: int) -> int:
        asked.append(ts_ms)
        return 150

    plan = plan_trim(
        parse_policy(policy_yaml) if policy_yaml else make_policy(),
        "t",
        3,
        earliest_offset=earliest,
        archived_watermark=watermark,
        offset_for_time=index,
        now=NOW,
    )
    return plan, asked


def test_the_hot_window_is_looked_up_at_exactly_now_minus_hot() -> None:
    plan, asked = trim()

    assert asked == [HOT_CUTOFF_MS]
    assert plan == TrimPlan("t", 3, 100, 150, "events before offset 150 are older than hot (7d)")


def test_a_plan_that_trims_nothing_still_names_its_partition() -> None:
    plan, _ = trim(earliest=150)

    assert (plan.topic, plan.partition, plan.earliest_offset, plan.trim_to) == (
        "t",
        3,
        150,
        None,
    )
    assert plan.reason == ("nothing to trim: events before offset 150 are older than hot (7d)")
    assert plan.deletes == 0


def test_the_reason_of_each_decision() -> None:
    lagging, _ = trim(watermark=120)
    nothing, _ = trim(watermark=None)
    unarchived_held, _ = trim(
        "legal_holds: [r]\ntopics:\n  t:\n    hot: 7d\n    archive_retention: 30d\n"
    )
    with_hold_archive, _ = trim(
        "legal_holds: [r]\ntopics:\n  t:\n    hot: 7d\n    archive_retention: 30d\n"
        "    hold_archive: {target: 'local:/holds'}\n"
    )

    assert lagging.reason == "archived up to offset 120; the rest waits for the archiver"
    assert nothing.reason == "nothing to trim: nothing archived reaches the earliest offset"
    assert unarchived_held.trim_to is None
    assert "neither archived nor has a hold_archive" in unarchived_held.reason
    assert with_hold_archive.trim_to == 150
    assert with_hold_archive.reason == (
        "events before offset 150 are older than hot (7d);"
        " held runs' records are kept in the hold archive first"
    )


def test_a_watermark_at_the_hot_start_trims_to_it() -> None:
    plan, _ = trim(watermark=150)

    assert plan.trim_to == 150


def hold_segment_of(
    source: SegmentManifest, holds: list[str], *, from_kafka: bool = False
) -> SegmentManifest:
    return source.model_copy(
        update={
            "hold": HoldOrigin(
                holds=holds,
                source_sha256=None if from_kafka else source.sha256,
                source_record_count=source.record_count,
                held_at=NOW - timedelta(days=40),
            )
        }
    )


def test_hold_segments_are_kept_while_a_hold_serves_them_and_expire_after(
    segment_factory: SegmentFactory,
) -> None:
    old = manifest_at(segment_factory, 0, 45)
    still_held = hold_segment_of(old, ["r-held"])
    lifted = hold_segment_of(manifest_at(segment_factory, 10, 45), ["r-gone"])
    runs = {0: frozenset({"r-held"}), 10: frozenset({"r-gone"})}

    plan = plan_expiry(
        make_policy(holds=("r-held",)),
        "t",
        0,
        [lifted, still_held],
        now=NOW,
        run_ids_of=lambda m: runs[m.first_offset],
    )

    assert plan.expire == (lifted,)
    assert plan.held == (HeldSegment(still_held, "hold segment for r-held", frozenset({"r-held"})),)
    assert plan.split == ()


def test_a_hold_segment_cut_from_kafka_expires_once_lifted_whatever_its_age(
    segment_factory: SegmentFactory,
) -> None:
    young = manifest_at(segment_factory, 0, 1)
    cut = hold_segment_of(young, ["r-gone"], from_kafka=True)
    asked: list[SegmentManifest] = []

    def run_ids_of(m: SegmentManifest) -> frozenset[str]:
        asked.append(m)
        return frozenset({"r-gone"})

    plan = plan_expiry(make_policy(), "t", 0, [cut, young], now=NOW, run_ids_of=run_ids_of)

    assert plan.expire == (cut,)
    assert asked == [cut]  # no holds: only the hold segment's run ids are read


def test_a_segment_expires_one_millisecond_past_retention(segment_factory: SegmentFactory) -> None:
    edge = manifest_at(segment_factory, 0, 30)
    past = edge.model_copy(
        update={"last_timestamp": edge.last_timestamp - timedelta(milliseconds=1)}
    )

    expire = plan_expiry(make_policy(), "t", 0, [edge], now=NOW, run_ids_of=lambda m: frozenset())
    assert expire.expire == ()
    expire = plan_expiry(make_policy(), "t", 0, [past], now=NOW, run_ids_of=lambda m: frozenset())
    assert expire.expire == (past,)
    assert (expire.topic, expire.partition) == ("t", 0)


def test_the_unreadable_reason_names_the_error(segment_factory: SegmentFactory) -> None:
    old = manifest_at(segment_factory, 0, 45)

    def broken(m: SegmentManifest) -> frozenset[str]:
        raise ArchiveError("sidecar damaged")

    plan = plan_expiry(make_policy(holds=("r",)), "t", 2, [old], now=NOW, run_ids_of=broken)

    assert plan.held[0].reason == "run ids unreadable, kept to be safe: sidecar damaged"
    assert plan.held[0].held_run_ids == frozenset()
    assert plan.partition == 2
