"""Retention planning: trims never pass the archive, expiry respects legal holds."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import ArchiveError, PolicyError
from runstate.retention import (
    LocalArchive,
    OffsetForTime,
    RetentionPolicy,
    SegmentManifest,
    build_segment,
    parse_policy,
    plan_expiry,
    plan_trim,
)

from .support import RecordFactory, SegmentFactory

NOW = datetime(2026, 1, 31, tzinfo=UTC)
DAY_MS = 86_400_000


def make_policy(
    *, hot: str = "7d", archived: bool = True, retention: str = "30d", holds: tuple[str, ...] = ()
) -> RetentionPolicy:
    archive = "\n    archive: {target: 'local:/archive'}" if archived else ""
    holds_yaml = f"legal_holds: {list(holds)}\n" if holds else ""
    return parse_policy(
        f"{holds_yaml}topics:\n  t:\n    hot: {hot}{archive}\n    archive_retention: {retention}\n"
    )


def time_index(timestamps: list[int], earliest: int) -> OffsetForTime:
    """Kafka's offsets_for_times over records ``earliest, earliest+1, ...`` (sorted times)."""

    def lookup(ts_ms: int) -> int:
        return earliest + bisect.bisect_left(timestamps, ts_ms)

    return lookup


now_ms = int(NOW.timestamp() * 1000)
partitions = st.tuples(
    st.integers(0, 1000),  # earliest offset
    st.lists(st.integers(now_ms - 30 * DAY_MS, now_ms), max_size=50).map(sorted),
    st.none() | st.integers(0, 1100),  # archived watermark
    st.sampled_from(["1h", "12h", "7d", "14d"]),
    st.booleans(),  # archived topic
    st.booleans(),  # legal holds exist
)


@given(partitions)
def test_trim_never_passes_the_watermark_nor_the_hot_window(
    case: tuple[int, list[int], int | None, str, bool, bool],
) -> None:
    earliest, timestamps, watermark, hot, archived, holds = case
    policy = make_policy(hot=hot, archived=archived, holds=("r-held",) if holds else ())
    index = time_index(timestamps, earliest)

    plan = plan_trim(
        policy,
        "t",
        0,
        earliest_offset=earliest,
        archived_watermark=watermark,
        offset_for_time=index,
        now=NOW,
    )

    hot_start = index(int((NOW - policy.topic("t").hot).timestamp() * 1000))
    if plan.trim_to is None:
        assert plan.deletes == 0
        return
    assert plan.trim_to > earliest
    assert plan.trim_to <= hot_start
    if archived:
        assert watermark is not None and plan.trim_to <= watermark
        assert plan.trim_to == min(hot_start, watermark)
    else:
        assert not holds and plan.trim_to == hot_start
    # Every offset the trim deletes is older than the hot window.
    cutoff = now_ms - int(policy.topic("t").hot.total_seconds() * 1000)
    assert all(ts < cutoff for ts in timestamps[: plan.trim_to - earliest])


def test_trim_examples() -> None:
    ten_days = [now_ms - (10 - i) * DAY_MS for i in range(10)]  # offsets 100..109, 1/day
    index = time_index(ten_days, 100)

    def trim(archived_watermark: int | None, policy: RetentionPolicy | None = None) -> int | None:
        return plan_trim(
            policy or make_policy(),
            "t",
            0,
            earliest_offset=100,
            archived_watermark=archived_watermark,
            offset_for_time=index,
            now=NOW,
        ).trim_to

    assert trim(archived_watermark=200) == 103  # hot window: the last 7 days stay
    assert trim(archived_watermark=102) == 102  # archiver lags: wait for it
    assert trim(archived_watermark=100) is None
    assert trim(archived_watermark=None) is None
    assert trim(archived_watermark=None, policy=make_policy(archived=False)) == 103
    assert trim(archived_watermark=None, policy=make_policy(archived=False, holds=("r",))) is None


def test_trim_reasons_explain_the_decision() -> None:
    index = time_index([now_ms - 9 * DAY_MS, now_ms - 8 * DAY_MS], 0)
    plan = plan_trim(
        make_policy(),
        "t",
        0,
        earliest_offset=0,
        archived_watermark=1,
        offset_for_time=index,
        now=NOW,
    )

    assert plan.trim_to == 1 and plan.deletes == 1
    assert "archived up to offset 1" in plan.reason
    with pytest.raises(PolicyError, match="no retention policy"):
        plan_trim(
            make_policy(),
            "u",
            0,
            earliest_offset=0,
            archived_watermark=1,
            offset_for_time=index,
            now=NOW,
        )


def manifest_at(segment_factory: SegmentFactory, first: int, days_ago: float) -> SegmentManifest:
    """A 10-offset segment whose newest record is ``days_ago`` old."""
    manifest = segment_factory(first, first + 9).manifest
    newest = NOW - timedelta(days=days_ago)
    return manifest.model_copy(update={"first_timestamp": newest, "last_timestamp": newest})


def test_expiry_takes_segments_past_retention(segment_factory: SegmentFactory) -> None:
    old, edge, young = (
        manifest_at(segment_factory, f, d) for f, d in [(0, 45), (10, 30), (20, 29)]
    )
    tombstone = old.expire(NOW)

    plan = plan_expiry(
        make_policy(),
        "t",
        0,
        [young, edge, old, tombstone],
        now=NOW,
        run_ids_of=lambda m: frozenset(),
    )

    assert plan.expire == (old,)  # edge is exactly 30d old: not yet *past* retention
    assert plan.held == ()


def test_forever_expires_nothing(segment_factory: SegmentFactory) -> None:
    old = manifest_at(segment_factory, 0, 4000)

    plan = plan_expiry(
        make_policy(retention="forever"), "t", 0, [old], now=NOW, run_ids_of=lambda m: frozenset()
    )

    assert plan.expire == () and plan.held == ()


def test_legal_holds_keep_their_runs_not_whole_segments(segment_factory: SegmentFactory) -> None:
    segments = [manifest_at(segment_factory, f, 60) for f in (0, 10, 20, 30)]
    run_ids = {0: {"r-1"}, 10: {"r-held", "r-2"}, 20: set(), 30: {"r-held"}}
    asked: list[int] = []

    def run_ids_of(m: SegmentManifest) -> frozenset[str]:
        asked.append(m.first_offset)
        if m.first_offset == 20:
            raise ArchiveError("sidecar damaged")
        return frozenset(run_ids[m.first_offset])

    plan = plan_expiry(
        make_policy(holds=("r-held",)), "t", 0, segments, now=NOW, run_ids_of=run_ids_of
    )

    assert plan.expire == (segments[0],)
    # A segment mixing held and other runs is split: the held run's records stay.
    assert [(h.manifest.first_offset, h.held_run_ids) for h in plan.split] == [(10, {"r-held"})]
    assert "records of r-held kept in a hold segment" in plan.split[0].reason
    # Kept whole: unreadable run ids, and a segment of held runs only (nothing to gain).
    assert [(h.manifest.first_offset, h.held_run_ids) for h in plan.held] == [
        (20, frozenset()),
        (30, {"r-held"}),
    ]
    assert "unreadable" in plan.held[0].reason
    assert "legal hold on r-held" in plan.held[1].reason
    assert asked == [0, 10, 20, 30]


def test_run_ids_are_not_read_without_holds(segment_factory: SegmentFactory) -> None:
    def never(m: SegmentManifest) -> frozenset[str]:
        raise AssertionError("no holds, no reason to read run ids")

    plan = plan_expiry(
        make_policy(), "t", 0, [manifest_at(segment_factory, 0, 60)], now=NOW, run_ids_of=never
    )

    assert len(plan.expire) == 1


def test_expiring_around_a_held_segment_keeps_the_watermark(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    store = LocalArchive(tmp_path)
    day = 86_400_000
    old_ms = now_ms - 60 * day
    for first, run in [(0, "r-1"), (10, "r-held"), (20, "r-2"), (30, "r-3")]:
        records = [
            r.__class__(r.offset, old_ms if first < 30 else now_ms, r.key, r.value, r.headers)
            for r in record_factory(range(first, first + 10), run_ids=[run] * 10)
        ]
        store.put_segment(build_segment("t", 0, records))
    policy = make_policy(holds=("r-held",))

    plan = plan_expiry(
        policy, "t", 0, store.list_manifests("t", 0), now=NOW, run_ids_of=store.run_ids
    )
    for manifest in plan.expire:
        store.delete_segment(manifest, at=NOW)

    assert [m.first_offset for m in plan.expire] == [0, 20]
    assert [h.manifest.first_offset for h in plan.held] == [10]
    assert [m.is_live for m in store.list_manifests("t", 0)] == [False, True, False, True]
    assert store.archived_watermark("t", 0) == 40
    assert [r.key for r in store.read_segment(plan.held[0].manifest)] == [b"r-held"] * 10
