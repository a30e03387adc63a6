"""Legal holds scoped to runs: a hold keeps its run's records and lets every other run go.

Each test runs once per backend (local and S3 over moto). The archive holds three segments
of 30 records each, three runs interleaved in every one; one run is under legal hold.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.errors import ArchiveError
from runstate.retention import (
    ArchiveSegment,
    ArchiveStore,
    BlobArchive,
    build_segment,
    verify,
)
from runstate.retention.apply import RetentionOutcome, apply_retention, plan_retention
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.holds import archive_chain
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.retention.manifest import HoldOrigin
from runstate.retention.replay import HistorySource, iter_history, plan_partition, replay_all
from runstate.streams.reader import read_topic

from .kafka_support import (
    create_topics,
    generate_runs,
    in_time_order,
    oracle,
    produce,
    write_policy,
)
from .support import (
    HOLD_NAMES,
    HOLD_NOW,
    HOLD_OFFSETS,
    HOLD_RUNS,
    MemoryKafka,
    RecordFactory,
    hold_context,
    key_counts,
)

NAMES = HOLD_NAMES
NOW = HOLD_NOW
OFFSETS = HOLD_OFFSETS
RUNS = HOLD_RUNS
TOPIC = NAMES.events
CHANGES = NAMES.state_changes


def _kafka_counts(bootstrap: str, topic: str) -> Counter[str]:
    return key_counts(r.key for r in read_topic(bootstrap, topic))


@pytest.fixture
def kafka(archive_store: BlobArchive, record_factory: RecordFactory) -> MemoryKafka:
    """Offsets 0..89 in Kafka and archived as three segments; runs round-robin by offset."""
    for first in range(0, OFFSETS, 30):
        offsets = range(first, first + 30)
        records = record_factory(offsets, run_ids=[RUNS[o % 3] for o in offsets])
        archive_store.put_segment(build_segment(TOPIC, 0, records))
    return MemoryKafka(TOPIC, {0: {r.offset: r.timestamp_ms for r in record_factory(range(90))}})


def _in_kafka(kafka: MemoryKafka) -> Counter[str]:
    low, high = kafka.watermarks(TOPIC)[0]
    return Counter(RUNS[o % 3] for o in range(low, high))


def _in_archive(store: BlobArchive) -> Counter[str]:
    """Records per run as readers see the archive (hold segments in tombstones' place)."""
    chain = archive_chain(store.list_manifests(TOPIC, 0), store.list_hold_manifests(TOPIC, 0))
    return Counter(
        (r.key or b"").decode() for m in chain if m.is_live for r in store.read_segment(m)
    )


def _apply(context: RetentionContext, kafka: MemoryKafka) -> RetentionOutcome:
    outcome = apply_retention(context, kafka, plan_retention(context, kafka, now=NOW))
    assert outcome.ok, outcome.refused
    return outcome


def test_a_hold_on_one_run_lets_every_other_run_be_trimmed_and_expired(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    context = hold_context(archive_store, holds=("run-held",))
    assert _in_kafka(kafka) == {"run-a": 30, "run-b": 30, "run-held": 30}
    assert _in_archive(archive_store) == {"run-a": 30, "run-b": 30, "run-held": 30}

    plan = plan_retention(context, kafka, now=NOW)
    assert [t.plan.trim_to for t in plan.trims] == [OFFSETS]  # the hold does not stop the trim
    assert [m.first_offset for m in plan.segments_to_split] == [0, 30, 60]
    outcome = apply_retention(context, kafka, plan)

    assert outcome.ok and outcome.trimmed == {(TOPIC, 0): OFFSETS}
    assert _in_kafka(kafka) == {}
    assert _in_archive(archive_store) == {"run-held": 30}
    assert len(outcome.expired) == 3 and len(outcome.hold_segments) == 3
    holds = archive_store.list_hold_manifests(TOPIC, 0)
    assert [(h.offsets, h.record_count, h.run_ids) for h in holds] == [
        ((first, first + 29), 10, ["run-held"]) for first in (0, 30, 60)
    ]
    assert all(h.hold is not None and h.hold.source_record_count == 30 for h in holds)
    tombstones = archive_store.list_manifests(TOPIC, 0)
    assert [t.hold_segment_sha256 for t in tombstones] == [h.sha256 for h in holds]
    # The held run's records keep their offsets, in order; nothing else is left to read.
    chain = archive_chain(tombstones, holds)
    held_offsets = [r.offset for m in chain for r in archive_store.read_segment(m)]
    assert held_offsets == list(range(2, OFFSETS, 3))
    # Coverage is whole, the watermark still reaches the end, nothing is debris.
    report = verify(archive_store, TOPIC, 0, kafka_earliest=OFFSETS)
    assert report.ok, report.issues
    assert (report.segments, report.expired, report.hold_segments, report.held_records) == (
        0,
        3,
        3,
        30,
    )
    assert report.orphans == ()
    assert archive_store.archived_watermark(TOPIC, 0, start=0) == OFFSETS

    # Applying again changes nothing: the hold segments serve a hold that still stands.
    again = _apply(context, kafka)
    assert again.expired == [] and again.hold_segments == []
    assert _in_archive(archive_store) == {"run-held": 30}


def test_lifting_the_hold_expires_the_hold_segments(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(hold_context(archive_store, holds=("run-held",)), kafka)
    assert _in_archive(archive_store) == {"run-held": 30}

    lifted = _apply(hold_context(archive_store, holds=()), kafka)

    assert [m.is_hold for m in lifted.expired] == [True, True, True]
    assert _in_archive(archive_store) == {}
    assert [h.is_live for h in archive_store.list_hold_manifests(TOPIC, 0)] == [False] * 3
    report = verify(archive_store, TOPIC, 0, kafka_earliest=OFFSETS)
    assert report.ok and report.hold_segments == 0 and report.expired == 3, report.issues
    assert report.orphans == ()


def test_a_hold_on_another_run_of_the_same_hold_segment_keeps_it(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(hold_context(archive_store, holds=("run-held", "run-b")), kafka)
    assert _in_archive(archive_store) == {"run-held": 30, "run-b": 30}

    # Lifting one of two holds keeps the hold segments whole until both are lifted.
    _apply(hold_context(archive_store, holds=("run-b",)), kafka)
    assert _in_archive(archive_store) == {"run-held": 30, "run-b": 30}
    _apply(hold_context(archive_store, holds=()), kafka)
    assert _in_archive(archive_store) == {}


def test_replay_of_the_held_run_reads_its_records_from_the_hold_segments(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(hold_context(archive_store, holds=("run-held",)), kafka)
    chain = archive_chain(
        archive_store.list_manifests(TOPIC, 0), archive_store.list_hold_manifests(TOPIC, 0)
    )
    span = plan_partition(chain, 0, kafka_low=OFFSETS, kafka_end=OFFSETS, topic=TOPIC)
    source = HistorySource(archive_store, kafka, "unused:9092", TOPIC, codec=None)  # type: ignore[arg-type]

    held = list(iter_history(source, span, run_id="run-held"))
    other = list(iter_history(source, span, run_id="run-a"))

    assert [r.offset for r in held] == list(range(2, OFFSETS, 3))
    assert {r.origin for r in held} == {"archive"} and other == []
    assert span.held == ((0, 29), (30, 59), (60, 89)) and span.expired == ()
    assert span.archive_end == OFFSETS


def test_an_interrupted_split_is_read_from_the_source_and_redone(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    first = archive_store.list_manifests(TOPIC, 0)[0]
    # A crash after the hold segment was published, before the source expired.
    copy = build_segment(
        TOPIC,
        0,
        [r for r in archive_store.read_segment(first) if r.key == b"run-held"],
        first_offset=first.first_offset,
        last_offset=first.last_offset,
        created_at=NOW,
    )
    origin = HoldOrigin(
        holds=["run-held"], source_sha256=first.sha256, source_record_count=30, held_at=NOW
    )
    archive_store.put_hold_segment(
        ArchiveSegment(copy.manifest.model_copy(update={"hold": origin}), copy.data)
    )

    # The source is live beside its hold segment: readers use the source only.
    assert _in_archive(archive_store) == {"run-a": 30, "run-b": 30, "run-held": 30}
    assert verify(archive_store, TOPIC, 0).ok

    _apply(hold_context(archive_store, holds=("run-held",)), kafka)  # the next apply finishes
    assert _in_archive(archive_store) == {"run-held": 30}
    report = verify(archive_store, TOPIC, 0)
    assert report.ok and report.hold_segments == 3 and report.orphans == (), report.issues


@pytest.mark.parametrize("damage", ["body", "manifest", "bytes"])
def test_verify_and_replay_report_a_missing_or_damaged_hold_segment(
    archive_store: BlobArchive, kafka: MemoryKafka, damage: str
) -> None:
    _apply(hold_context(archive_store, holds=("run-held",)), kafka)
    hold = archive_store.list_hold_manifests(TOPIC, 0)[1]
    if damage == "body":
        archive_store._delete(hold.segment_name)
    elif damage == "manifest":
        archive_store._delete(hold.manifest_name)
    else:
        archive_store._write(hold.segment_name, b"not the segment")

    report = verify(archive_store, TOPIC, 0, kafka_earliest=OFFSETS)

    assert not report.ok
    issue = report.issues[0]
    assert issue.kind == {"body": "missing", "manifest": "missing", "bytes": "checksum"}[damage]
    assert {(i.first_offset, i.last_offset) for i in report.issues} == {(30, 59)}
    if damage == "manifest":
        assert "hold segment" in issue.detail and "lost" in issue.detail
        with pytest.raises(ArchiveError, match=r"hold segment .* is missing"):
            archive_chain(
                archive_store.list_manifests(TOPIC, 0), archive_store.list_hold_manifests(TOPIC, 0)
            )
    else:
        with pytest.raises(ArchiveError):
            _in_archive(archive_store)


def test_a_hold_segment_needs_its_live_source(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(hold_context(archive_store, holds=("run-held",)), kafka)
    hold = archive_store.list_hold_manifests(TOPIC, 0)[0]
    data = archive_store.fetch_segment(hold)

    with pytest.raises(ArchiveError, match="not the live segment"):
        archive_store.put_hold_segment(ArchiveSegment(hold, data))
    with pytest.raises(ArchiveError, match="put_hold_segment"):
        archive_store.put_segment(ArchiveSegment(hold, data))


# -- the real thing: Kafka, the archiver, replay ---------------------------------------------


def _archive_counts(store: ArchiveStore, topic: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for p in store.partitions(topic):
        chain = archive_chain(store.list_manifests(topic, p), store.list_hold_manifests(topic, p))
        counts.update(
            (r.key or b"").decode() for m in chain if m.is_live for r in store.read_segment(m)
        )
    return counts


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_held_run_replays_whole_after_everything_around_it_expired(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    backend: str,
) -> None:
    prefix = unique_name("holds")
    names = create_topics(kafka_bootstrap, prefix)
    target, endpoint = f"local:{tmp_path / 'archive'}", None
    if backend == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        target = f"s3://{request.getfixturevalue('s3_bucket')}/runstate/events"
    runs = generate_runs(60, seed=11)
    held = sorted(runs)[7]
    events = in_time_order(runs)
    policy = write_policy(
        tmp_path / "policy.yaml",
        names,
        target=target,
        endpoint=endpoint,
        archive_retention="1d",
        legal_holds=[held],
    )
    context = load_context(policy, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    store = context.store(names.events)
    cut = len(events) * 2 // 3
    deliveries = produce(kafka_bootstrap, prefix, events[:cut])
    config = ArchiverConfig(kafka_bootstrap, names.events, f"{prefix}-g", roll_records=50)
    Archiver(config, store).run(once=True)
    before = _kafka_counts(kafka_bootstrap, names.events)
    assert _archive_counts(store, names.events) == before and len(before) > 40
    kafka = ConfluentKafkaLog(kafka_bootstrap)

    later = datetime.now(UTC) + timedelta(days=2)  # every archived record is past 1d
    plan = plan_retention(context, kafka, now=later, topics=["events"])
    outcome = apply_retention(context, kafka, plan)

    assert outcome.ok and outcome.hold_segments, outcome.refused
    kept = outcome.hold_segments
    assert _kafka_counts(kafka_bootstrap, names.events) == {}  # the hold did not stop the trim
    assert _archive_counts(store, names.events) == {held: before[held]}
    deliveries += produce(kafka_bootstrap, prefix, events[cut:])
    source = HistorySource(store, kafka, kafka_bootstrap, names.events, context.event_codec())
    expected = oracle(deliveries, events)
    result = replay_all(source, run_id=held)
    assert result.states == {held: expected[held]}
    assert result.stats.archive_records == before[held]
    common = ["--policy", str(policy), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    checked = CliRunner().invoke(app, ["archive", "verify", "--json", *common])
    assert checked.exit_code == 0, checked.output
    reports = json.loads(checked.output)
    assert sum(r["held_records"] for r in reports) == before[held]
    shown = CliRunner().invoke(app, ["replay", "--run", held, "--json", "--no-progress", *common])
    assert shown.exit_code == 0, shown.output

    # The hold is lifted: its records expire like any other run's.
    lifted = write_policy(
        tmp_path / "lifted.yaml", names, target=target, endpoint=endpoint, archive_retention="1d"
    )
    lifted_context = load_context(lifted, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    plan = plan_retention(lifted_context, kafka, now=later, topics=["events"])
    outcome = apply_retention(lifted_context, kafka, plan)
    kept = [
        h
        for p in store.partitions(names.events)
        for h in store.list_hold_manifests(names.events, p)
    ]
    assert outcome.ok and {m.segment_name for m in outcome.expired} == {
        h.segment_name for h in kept
    }
    assert _archive_counts(lifted_context.store(names.events), names.events) == {}
    assert CliRunner().invoke(app, ["archive", "verify", *common]).exit_code == 0


def test_manifests_without_holds_are_stored_as_before(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    live = archive_store.list_manifests(TOPIC, 0)[0]
    assert b'"hold' not in live.to_json()
    assert b'"hold' not in live.expire(NOW).to_json()  # a plain tombstone too

    _apply(hold_context(archive_store, holds=("run-held",)), kafka)

    tombstone = archive_store.list_manifests(TOPIC, 0)[0]
    hold = archive_store.list_hold_manifests(TOPIC, 0)[0]
    assert b'"hold_segment_sha256"' in tombstone.to_json() and b'"hold"' not in tombstone.to_json()
    assert hold.manifest_name.endswith(".hold.manifest.json")
    assert hold.segment_name.endswith(".hold.avro") and hold.stem == tombstone.stem
    assert hold.expire(NOW).hold is not None and hold.expire(NOW).hold.holds == []  # type: ignore[union-attr]


def test_retention_plan_json_lists_the_segments_split_for_holds(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    from runstate.cli.retention import _plan_json

    plan = plan_retention(hold_context(archive_store, holds=("run-held",)), kafka, now=NOW)
    body = _plan_json(plan)

    (events,) = [e for e in body["archive"] if e["topic"] == TOPIC]
    assert [s["segment"] for s in events["split"]] == [m.stem for m in plan.segments_to_split]
    assert all("run-held" in s["reason"] for s in events["split"])
    assert events["expire"] == [] and body["totals"]["archive_segments_split"] == 3
