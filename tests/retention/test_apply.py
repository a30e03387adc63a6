"""``retention plan/apply``: never trim what is not archived; expire by policy, holds kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.retention import build_segment
from runstate.retention.apply import apply_retention, plan_retention
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.streams.topics import TopicNames

from .kafka_support import (
    archived_offsets,
    create_topics,
    generate_runs,
    in_time_order,
    produce,
    topic_offsets,
    write_policy,
)
from .support import T0_MS, MemoryKafka, RecordFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _context(tmp_path: Path, *, holds: tuple[str, ...] = (), hot: str = "1d") -> RetentionContext:
    names = TopicNames("rs")
    policy = write_policy(
        tmp_path / "policy.yaml",
        names,
        target=f"local:{tmp_path / 'archive'}",
        hot=hot,
        archive_retention="30d",
        legal_holds=holds,
    )
    return load_context(policy, bootstrap_servers="unused:9092", topic_prefix="rs")


def _archive(
    context: RetentionContext, record_factory: RecordFactory, first: int, last: int, **kw: object
) -> None:
    topic = context.names.events
    records = record_factory(range(first, last + 1), **kw)
    context.store(topic).put_segment(build_segment(topic, 0, records))


def test_plan_trims_to_the_archived_watermark_not_to_the_hot_window(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    context = _context(tmp_path)
    topic = context.names.events
    kafka = MemoryKafka(topic, {0: {o: T0_MS + o * 1000 for o in range(100)}})
    _archive(context, record_factory, 0, 39)

    plan = plan_retention(context, kafka, now=NOW)

    (trim,) = [t for t in plan.trims if t.plan.topic == topic]
    assert (trim.plan.trim_to, trim.archived_watermark, trim.end_offset) == (40, 40, 100)
    assert plan.offsets_to_trim == 40 and plan.bytes_to_trim == 4000
    outcome = apply_retention(context, kafka, plan)
    assert outcome.ok and outcome.trimmed == {(topic, 0): 40}


def test_plan_keeps_the_hot_window(tmp_path: Path, record_factory: RecordFactory) -> None:
    context = _context(tmp_path, hot="1d")
    topic = context.names.events
    now_ms = int(NOW.timestamp() * 1000)
    # offsets 0..49 are two days old, 50..99 are an hour old
    times = {o: now_ms - (2 * 86_400_000 if o < 50 else 3_600_000) for o in range(100)}
    kafka = MemoryKafka(topic, {0: times})
    _archive(context, record_factory, 0, 89)

    (trim,) = [t for t in plan_retention(context, kafka, now=NOW).trims if t.plan.topic == topic]

    assert trim.plan.trim_to == 50


def test_apply_refuses_a_trim_the_archive_no_longer_backs(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    context = _context(tmp_path)
    topic = context.names.events
    kafka = MemoryKafka(topic, {0: {o: T0_MS for o in range(100)}})
    _archive(context, record_factory, 0, 39)
    _archive(context, record_factory, 40, 59)
    plan = plan_retention(context, kafka, now=NOW)
    # The newer segment disappears between plan and apply (deleted by hand, store swapped).
    (manifest,) = [m for m in context.store(topic).list_manifests(topic, 0) if m.first_offset == 40]
    (tmp_path / "archive" / manifest.manifest_name).unlink()

    outcome = apply_retention(context, kafka, plan)

    assert not outcome.ok and "refused" in outcome.refused[0]
    assert kafka.deleted == {}


def test_apply_refuses_a_trim_one_offset_past_the_archive(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    """The boundary: the archive now ends one offset short of the plan's trim point."""
    context = _context(tmp_path)
    topic = context.names.events
    kafka = MemoryKafka(topic, {0: {o: T0_MS for o in range(100)}})
    _archive(context, record_factory, 0, 39)
    _archive(context, record_factory, 40, 59)
    plan = plan_retention(context, kafka, now=NOW)
    assert [t.plan.trim_to for t in plan.trims] == [60]
    (manifest,) = [m for m in context.store(topic).list_manifests(topic, 0) if m.first_offset == 40]
    (tmp_path / "archive" / manifest.manifest_name).unlink()
    _archive(context, record_factory, 40, 58)  # offset 59 is no longer archived

    outcome = apply_retention(context, kafka, plan)

    assert not outcome.ok and "only up to 59" in outcome.refused[0]
    assert kafka.deleted == {}


def test_a_refused_partition_does_not_stop_the_others(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    context = _context(tmp_path)
    topic = context.names.events
    store = context.store(topic)
    kafka = MemoryKafka(topic, {p: {o: T0_MS for o in range(100)} for p in (0, 1, 2, 3)})
    for partition in (1, 2, 3):  # partition 0 has nothing archived: nothing to trim there
        store.put_segment(build_segment(topic, partition, record_factory(range(0, 40))))
    plan = plan_retention(context, kafka, now=NOW)
    assert [(t.plan.partition, t.plan.trim_to) for t in plan.trims] == [
        (0, None),
        (1, 40),
        (2, 40),
        (3, 40),
    ]
    (manifest,) = store.list_manifests(topic, 2)
    (tmp_path / "archive" / manifest.manifest_name).unlink()  # partition 2 is no longer backed

    outcome = apply_retention(context, kafka, plan)

    [refused] = [r for r in outcome.refused if " trim to " in r]
    assert refused.startswith(f"{topic}/2: trim to 40 refused")
    assert outcome.trimmed == {(topic, 1): 40, (topic, 3): 40}
    assert kafka.deleted == {1: 40, 3: 40}


def test_expiry_deletes_old_segments_except_those_under_legal_hold(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    context = _context(tmp_path, holds=("run-held",))
    topic = context.names.events
    kafka = MemoryKafka(topic, {0: {o: T0_MS for o in range(30, 40)}})
    _archive(context, record_factory, 0, 9)
    _archive(context, record_factory, 10, 19, run_ids=["run-held"] * 10)
    _archive(context, record_factory, 20, 29)

    plan = plan_retention(context, kafka, now=NOW)  # records are from 2025-01-01: all expired

    assert [m.first_offset for m in plan.segments_to_expire] == [0, 20]
    assert plan.records_to_expire == 20
    assert [h.manifest.first_offset for e in plan.expiries for h in e.held] == [10]
    outcome = apply_retention(context, kafka, plan)
    manifests = context.store(topic).list_manifests(topic, 0)
    assert [m.is_live for m in manifests] == [False, True, False]
    assert len(outcome.expired) == 2
    # Tombstones keep the range accounted for: the watermark still reaches 30.
    assert context.store(topic).archived_watermark(topic, 0, start=0) == 30


@pytest.mark.integration
def test_apply_never_trims_an_offset_the_lagging_archiver_has_not_archived(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    from runstate.retention.archiver import Archiver, ArchiverConfig

    prefix = unique_name("apply")
    names = create_topics(kafka_bootstrap, prefix)
    policy = write_policy(tmp_path / "policy.yaml", names, target=f"local:{tmp_path / 'a'}")
    context = load_context(policy, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    events = in_time_order(generate_runs(200, seed=2))
    produce(kafka_bootstrap, prefix, events[:1000])
    config = ArchiverConfig(kafka_bootstrap, names.events, f"{prefix}-g", roll_records=100)
    Archiver(config, context.store(names.events)).run(once=True)
    produce(kafka_bootstrap, prefix, events[1000:])  # the archiver is now behind
    before = topic_offsets(kafka_bootstrap, names.events)
    store = context.store(names.events)
    archived = set(archived_offsets(store, names.events))
    env = {"COLUMNS": "200"}
    common = ["--policy", str(policy), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]

    shown = CliRunner().invoke(app, ["retention", "plan", "--json", *common], env=env)
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["totals"]["kafka_offsets"] == len(archived)
    assert body["totals"]["kafka_bytes_estimated"] > 0

    applied = CliRunner().invoke(app, ["retention", "apply", "--yes", *common], env=env)
    assert applied.exit_code == 0, applied.output

    after = topic_offsets(kafka_bootstrap, names.events)
    trimmed = before - after
    assert trimmed, "something was trimmed"
    assert trimmed <= archived, f"unarchived offsets trimmed: {sorted(trimmed - archived)[:5]}"
    assert after | archived == before  # nothing lost: each offset is in Kafka or the archive
    marks = ConfluentKafkaLog(kafka_bootstrap).watermarks(names.events)
    for partition, (low, _high) in marks.items():
        assert low == store.archived_watermark(names.events, partition)
    checked = CliRunner().invoke(app, ["archive", "verify", *common], env=env)
    assert checked.exit_code == 0 and "ok" in checked.output, checked.output
    # Applying again changes nothing: the trim point is the watermark.
    again = CliRunner().invoke(app, ["retention", "apply", "--yes", *common], env=env)
    assert again.exit_code == 0 and topic_offsets(kafka_bootstrap, names.events) == after

    # The policy moves to a new, empty store: it can only archive what Kafka still has, so
    # its partitions start where the trim left Kafka. Verify must not call that sound.
    moved = write_policy(tmp_path / "moved.yaml", names, target=f"local:{tmp_path / 'b'}")
    moved_context = load_context(moved, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    config_b = ArchiverConfig(kafka_bootstrap, names.events, f"{prefix}-gb", roll_records=100)
    Archiver(config_b, moved_context.store(names.events)).run(once=True)
    moved_common = ["--policy", str(moved), *common[2:]]
    wrong = CliRunner().invoke(app, ["archive", "verify", "--json", *moved_common], env=env)
    assert wrong.exit_code == 1, wrong.output
    trimmed_partitions = {p for p, (low, _high) in marks.items() if low > 0}
    holes = {
        r["partition"]: r["issues"]
        for r in json.loads(wrong.output)
        if any("not in this archive" in i for i in r["issues"])
    }
    assert set(holes) == trimmed_partitions, holes
    # The old store still proves the whole history.
    assert CliRunner().invoke(app, ["archive", "verify", *common], env=env).exit_code == 0
