"""``runstate estimate``: the arithmetic per tier, and measuring from manifests."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.retention import LocalArchive, build_segment, parse_policy
from runstate.retention.estimate import (
    DEFAULT_SUMMARY_BYTES,
    Workload,
    default_state_bytes,
    estimate_storage,
    measure,
    total_after,
)
from runstate.retention.kafka_log import SizeSample
from runstate.streams.topics import TopicNames

from .support import RecordFactory

NAMES = TopicNames("rs")
POLICY = parse_policy(
    """
topics:
  rs.events:
    hot: 7d
    archive: {target: "local:/tmp/unused"}
    archive_retention: 400d
  rs.state-changes:
    hot: 3d
"""
)
WORKLOAD = Workload(
    runs_per_day=1000, events_per_run=20, avg_event_bytes=400, archive_bytes_per_event=100
)


def _tiers(workload: Workload = WORKLOAD, policy=POLICY):  # type: ignore[no-untyped-def]
    return {t.tier: t for t in estimate_storage(workload, policy, NAMES)}


def test_kafka_hot_holds_the_hot_window_of_events() -> None:
    hot = _tiers()["kafka hot: events"]
    assert hot.daily_bytes == 1000 * 20 * 400
    assert hot.held_after(1) == 8_000_000
    assert hot.held_after(30) == 7 * 8_000_000  # levels off after 7 days
    assert hot.held_after(365) == hot.steady_bytes == 56_000_000


def test_state_changes_follow_their_own_hot_window() -> None:
    changes = _tiers()["kafka hot: state changes"]
    assert changes.daily_bytes == 1000 * 20 * 180
    assert changes.held_after(30) == 3 * changes.daily_bytes


def test_the_archive_keeps_archive_retention_of_compressed_events() -> None:
    archive = _tiers()["archive: events"]
    assert archive.daily_bytes == 1000 * 20 * 100
    assert archive.held_after(365) == 365 * 2_000_000
    assert archive.steady_bytes == 400 * 2_000_000


def test_the_changelog_grows_with_every_run_ever_started() -> None:
    changelog = _tiers()["changelog + latest state"]
    state = default_state_bytes(20)
    assert state == 300 + 8 * 20 + 50 * 20
    assert changelog.daily_bytes == 1000 * (state + DEFAULT_SUMMARY_BYTES)
    assert changelog.held_after(365) == 365 * changelog.daily_bytes
    assert math.isinf(changelog.steady_bytes)


def test_replication_multiplies_kafka_tiers_but_not_the_archive() -> None:
    tiers = _tiers(Workload(1000, 20, 400, 100, replication_factor=3))
    assert tiers["kafka hot: events"].daily_bytes == 3 * 8_000_000
    assert tiers["archive: events"].daily_bytes == 2_000_000


def test_the_archive_ratio_is_assumed_when_not_measured() -> None:
    workload = Workload(1000, 20, avg_event_bytes=400)
    assert _tiers(workload)["archive: events"].daily_bytes == pytest.approx(1000 * 20 * 400 * 0.35)


def test_without_a_policy_nothing_leaves_kafka_and_nothing_is_archived() -> None:
    tiers = _tiers(policy=None)
    assert "archive: events" not in tiers
    assert tiers["kafka hot: events"].kept is None
    assert tiers["kafka hot: events"].held_after(365) == 365 * 8_000_000


def test_legal_holds_keep_an_unarchived_topic_whole() -> None:
    held = POLICY.model_copy(update={"legal_holds": ["run-1"]})
    assert _tiers(policy=held)["kafka hot: state changes"].kept is None
    assert _tiers(policy=held)["kafka hot: events"].kept == timedelta(days=7)


def test_a_hold_archive_lets_an_unarchived_topic_be_trimmed_under_legal_holds() -> None:
    held = parse_policy(
        """
legal_holds: [run-1]
topics:
  rs.events:
    hot: 7d
    archive: {target: "local:/tmp/unused"}
    archive_retention: 400d
  rs.state-changes:
    hot: 3d
    hold_archive: {target: "local:/tmp/holds"}
"""
    )
    changes = _tiers(policy=held)["kafka hot: state changes"]
    assert changes.kept == timedelta(days=3) and "hold_archive" in changes.note
    assert changes.held_after(365) == changes.held_after(3)


def test_total_after_sums_the_tiers() -> None:
    tiers = list(_tiers().values())
    assert total_after(tiers, 30) == sum(t.held_after(30) for t in tiers)


class _NoKafka:
    def topics(self) -> set[str]:
        return {NAMES.events}

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        return {0: (0, 10), 1: (5, 5)}

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int:
        raise AssertionError("not used")

    def delete_records(self, topic: str, before: object) -> dict[int, int]:
        raise AssertionError("not used")

    def sample_sizes(self, topic: str, partition: int, *, start: int, limit: int) -> SizeSample:
        assert partition == 0  # the empty partition is not sampled
        return SizeSample(10, 2500)


def test_measure_reads_event_size_from_kafka_and_archive_size_from_manifests(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    store = LocalArchive(tmp_path)
    for first in (0, 50):
        store.put_segment(build_segment(NAMES.events, 0, record_factory(range(first, first + 50))))
    manifests = store.list_manifests(NAMES.events, 0)

    measured, notes = measure(_NoKafka(), NAMES, store)

    assert notes == []
    assert measured.avg_event_bytes == 250 and measured.sampled_events == 10
    assert measured.archived_records == 100
    per_record = sum(m.size_bytes for m in manifests) / 100
    assert measured.archive_bytes_per_event == per_record
    assert measured.compression_ratio == pytest.approx(per_record / 250)


def test_cli_estimate_prints_every_tier(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "topics:\n  rs.events:\n    hot: 7d\n    archive: {target: 'local:/x'}\n"
        "    archive_retention: 400d\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            "--runs-per-day",
            "1000",
            "--events-per-run",
            "20",
            "--avg-event-bytes",
            "400",
            "--policy",
            str(policy),
            "--topic-prefix",
            "rs",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    tiers = {t["tier"]: t for t in body["tiers"]}
    assert tiers["kafka hot: events"]["held_after_year"] == 56_000_000
    assert tiers["archive: events"]["kept_days"] == 400
