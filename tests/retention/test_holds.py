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
from confluent_kafka import Producer
from typer.testing import CliRunner

from runstate.cli import app
from runstate.errors import ArchiveError, PolicyError
from runstate.retention import (
    ArchiveSegment,
    ArchiveStore,
    BlobArchive,
    build_segment,
    parse_policy,
    verify,
)
from runstate.retention.apply import RetentionOutcome, apply_retention, plan_retention
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.holds import archive_chain, keep_held_before_trim
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.retention.manifest import HoldOrigin
from runstate.retention.replay import HistorySource, iter_history, plan_partition, replay_all
from runstate.streams.producer import producer_config
from runstate.streams.reader import read_topic
from runstate.streams.topics import TopicNames

from .kafka_support import (
    create_topics,
    generate_runs,
    in_time_order,
    oracle,
    produce,
    write_policy,
)
from .support import T0_MS, MemoryKafka, RecordFactory

NAMES = TopicNames("rs")
TOPIC = NAMES.events
CHANGES = NAMES.state_changes
NOW = datetime(2026, 1, 1, tzinfo=UTC)  # factory records are from 2025-01-01: all past 30d
RUNS = ("run-a", "run-b", "run-held")
OFFSETS = 90


def _context(
    store: BlobArchive, *, holds: tuple[str, ...], hold_archive: bool = True
) -> RetentionContext:
    changes_holds = "    hold_archive: {target: 'local:/unused'}\n" if hold_archive else ""
    policy = parse_policy(
        f"legal_holds: {list(holds)}\ntopics:\n  {TOPIC}:\n    hot: 1d\n"
        "    archive: {target: 'local:/unused'}\n    archive_retention: 30d\n"
        f"  {CHANGES}:\n    hot: 1d\n{changes_holds}"
    )
    context = RetentionContext(policy, NAMES, "unused:9092")
    # The backend under test instead of the policy's targets.
    context._stores[TOPIC] = store
    context._stores[f"hold:{CHANGES}"] = store
    return context


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
    context = _context(archive_store, holds=("run-held",))
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
    _apply(_context(archive_store, holds=("run-held",)), kafka)
    assert _in_archive(archive_store) == {"run-held": 30}

    lifted = _apply(_context(archive_store, holds=()), kafka)

    assert [m.is_hold for m in lifted.expired] == [True, True, True]
    assert _in_archive(archive_store) == {}
    assert [h.is_live for h in archive_store.list_hold_manifests(TOPIC, 0)] == [False] * 3
    report = verify(archive_store, TOPIC, 0, kafka_earliest=OFFSETS)
    assert report.ok and report.hold_segments == 0 and report.expired == 3, report.issues
    assert report.orphans == ()


def test_a_hold_on_another_run_of_the_same_hold_segment_keeps_it(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(_context(archive_store, holds=("run-held", "run-b")), kafka)
    assert _in_archive(archive_store) == {"run-held": 30, "run-b": 30}

    # Lifting one of two holds keeps the hold segments whole until both are lifted.
    _apply(_context(archive_store, holds=("run-b",)), kafka)
    assert _in_archive(archive_store) == {"run-held": 30, "run-b": 30}
    _apply(_context(archive_store, holds=()), kafka)
    assert _in_archive(archive_store) == {}


def test_replay_of_the_held_run_reads_its_records_from_the_hold_segments(
    archive_store: BlobArchive, kafka: MemoryKafka
) -> None:
    _apply(_context(archive_store, holds=("run-held",)), kafka)
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

    _apply(_context(archive_store, holds=("run-held",)), kafka)  # the next apply finishes
    assert _in_archive(archive_store) == {"run-held": 30}
    report = verify(archive_store, TOPIC, 0)
    assert report.ok and report.hold_segments == 3 and report.orphans == (), report.issues


@pytest.mark.parametrize("damage", ["body", "manifest", "bytes"])
def test_verify_and_replay_report_a_missing_or_damaged_hold_segment(
    archive_store: BlobArchive, kafka: MemoryKafka, damage: str
) -> None:
    _apply(_context(archive_store, holds=("run-held",)), kafka)
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
    _apply(_context(archive_store, holds=("run-held",)), kafka)
    hold = archive_store.list_hold_manifests(TOPIC, 0)[0]
    data = archive_store.fetch_segment(hold)

    with pytest.raises(ArchiveError, match="not the live segment"):
        archive_store.put_hold_segment(ArchiveSegment(hold, data))
    with pytest.raises(ArchiveError, match="put_hold_segment"):
        archive_store.put_segment(ArchiveSegment(hold, data))


# -- a topic that is not archived: held runs' records go to its hold_archive ---------------


def _changes(first: int, last: int) -> MemoryKafka:
    offsets = range(first, last + 1)
    return MemoryKafka(
        CHANGES,
        {0: {o: T0_MS + o * 1000 for o in offsets}},
        deleted={0: first},
        keys={0: {o: RUNS[o % 3].encode() for o in offsets}},
    )


def _changes_in_kafka(kafka: MemoryKafka) -> Counter[str]:
    low, high = kafka.watermarks(CHANGES)[0]
    return Counter(RUNS[o % 3] for o in range(low, high))


def _kept(store: BlobArchive) -> Counter[str]:
    holds = [h for h in store.list_hold_manifests(CHANGES, 0) if h.is_live]
    return Counter((r.key or b"").decode() for h in holds for r in store.read_segment(h))


def _apply_changes(context: RetentionContext, kafka: MemoryKafka) -> RetentionOutcome:
    plan = plan_retention(context, kafka, now=NOW, topics=["state-changes"])
    outcome = apply_retention(context, kafka, plan)
    assert outcome.ok, outcome.refused
    return outcome


def test_an_unarchived_topic_is_trimmed_under_a_hold_once_held_records_are_kept(
    archive_store: BlobArchive,
) -> None:
    kafka = _changes(0, OFFSETS - 1)
    context = _context(archive_store, holds=("run-held",))
    assert _changes_in_kafka(kafka) == {"run-a": 30, "run-b": 30, "run-held": 30}

    outcome = _apply_changes(context, kafka)

    assert outcome.trimmed == {(CHANGES, 0): OFFSETS}
    assert _changes_in_kafka(kafka) == {}
    assert _kept(archive_store) == {"run-held": 30}
    (hold,) = outcome.hold_segments
    assert hold.offsets == (0, OFFSETS - 1) and hold.hold is not None
    assert (hold.hold.source_sha256, hold.hold.source_record_count) == (None, OFFSETS)
    offsets = [r.offset for r in archive_store.read_segment(hold)]
    assert offsets == list(range(2, OFFSETS, 3))
    hold_body = archive_store.fetch_segment(hold)
    assert archive_store.orphans(CHANGES, 0) == []

    # More state changes arrive and age: the next trim keeps the next range, no overlap.
    kafka.partitions[0].update({o: T0_MS + o * 1000 for o in range(OFFSETS, 120)})
    kafka.keys[0].update({o: RUNS[o % 3].encode() for o in range(OFFSETS, 120)})
    again = _apply_changes(context, kafka)
    assert again.trimmed == {(CHANGES, 0): 120}
    assert [h.offsets for h in again.hold_segments] == [(OFFSETS, 119)]
    assert _kept(archive_store) == {"run-held": 40}
    report = verify(archive_store, CHANGES, 0, holds_only=True)
    assert report.ok and (report.hold_segments, report.held_records) == (2, 40), report.issues
    archive_store._write(hold.segment_name, b"damaged")
    damaged = verify(archive_store, CHANGES, 0, holds_only=True)
    assert {(i.kind, i.first_offset) for i in damaged.issues} >= {("checksum", 0)}
    archive_store._write(hold.segment_name, hold_body)

    # The hold is lifted: what it kept expires at the next apply.
    lifted = _apply_changes(_context(archive_store, holds=()), kafka)
    assert {m.segment_name for m in lifted.expired} == {
        h.segment_name for h in [hold, *again.hold_segments]
    }
    assert _kept(archive_store) == {}


def test_without_a_hold_archive_holds_stop_the_trim_of_an_unarchived_topic(
    archive_store: BlobArchive,
) -> None:
    kafka = _changes(0, OFFSETS - 1)
    context = _context(archive_store, holds=("run-held",), hold_archive=False)

    plan = plan_retention(context, kafka, now=NOW, topics=["state-changes"])

    (trim,) = plan.trims
    assert trim.plan.trim_to is None and "hold_archive" in trim.plan.reason
    assert apply_retention(context, kafka, plan).trimmed == {}
    assert _changes_in_kafka(kafka) == {"run-a": 30, "run-b": 30, "run-held": 30}
    # Without holds the same topic is trimmed after hot, as before.
    free = _context(archive_store, holds=(), hold_archive=False)
    assert _apply_changes(free, kafka).trimmed == {(CHANGES, 0): OFFSETS}


def test_a_trim_interrupted_after_keeping_the_held_records_resumes_without_overlap(
    archive_store: BlobArchive,
) -> None:
    kafka = _changes(0, 59)
    context = _context(archive_store, holds=("run-held",))
    plan = plan_retention(context, kafka, now=NOW, topics=["state-changes"])
    # The held records of 0..59 were kept, then the apply stopped before DeleteRecords.
    kept = keep_held_before_trim(
        archive_store,
        kafka,
        CHANGES,
        0,
        low=0,
        trim_to=60,
        holds=frozenset({"run-held"}),
        at=NOW,
    )
    assert kept[0] == 60 and kept[1] is not None
    kafka.partitions[0].update({o: T0_MS + o * 1000 for o in range(60, OFFSETS)})
    kafka.keys[0].update({o: RUNS[o % 3].encode() for o in range(60, OFFSETS)})

    first = _apply_changes(context, kafka)  # trims only as far as the kept range reaches
    second = _apply_changes(context, kafka)

    assert plan.trims[0].plan.trim_to == 60
    assert first.trimmed == {(CHANGES, 0): 60} and first.hold_segments == []
    assert second.trimmed == {(CHANGES, 0): OFFSETS}
    assert [h.offsets for h in archive_store.list_hold_manifests(CHANGES, 0)] == [
        (0, 59),
        (60, OFFSETS - 1),
    ]
    assert _kept(archive_store) == {"run-held": 30}


def test_a_hold_archive_is_only_for_topics_that_are_not_archived() -> None:
    with pytest.raises(PolicyError, match="hold_archive is for topics that are not archived"):
        parse_policy(
            "topics:\n  t:\n    hot: 1d\n    archive: {target: 'local:/a'}\n"
            "    hold_archive: {target: 'local:/b'}\n"
        )


# -- the real thing: Kafka, the archiver, replay ---------------------------------------------


def _kafka_counts(bootstrap: str, topic: str) -> Counter[str]:
    return Counter((r.key or b"").decode() for r in read_topic(bootstrap, topic))


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


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_state_changes_under_a_hold_are_trimmed_and_the_held_run_kept(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("holdchanges")
    names = create_topics(kafka_bootstrap, prefix)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"legal_holds: [run-held]\ntopics:\n  {names.state_changes}:\n    hot: 1h\n"
        f"    hold_archive: {{target: 'local:{tmp_path / 'holds'}'}}\n"
    )
    context = load_context(policy, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    producer = Producer(producer_config(kafka_bootstrap))
    for i in range(300):
        producer.produce(names.state_changes, key=RUNS[i % 3].encode(), value=b"change %d" % i)
    assert producer.flush(30) == 0
    before = _kafka_counts(kafka_bootstrap, names.state_changes)
    assert before == {"run-a": 100, "run-b": 100, "run-held": 100}
    kafka = ConfluentKafkaLog(kafka_bootstrap)

    later = datetime.now(UTC) + timedelta(days=1)
    plan = plan_retention(context, kafka, now=later, topics=["state-changes"])
    outcome = apply_retention(context, kafka, plan)

    assert outcome.ok and outcome.trimmed, outcome.refused
    assert _kafka_counts(kafka_bootstrap, names.state_changes) == {}
    store = context.hold_store("state-changes")
    kept = Counter(
        (r.key or b"").decode()
        for p in store.partitions(names.state_changes)
        for h in store.list_hold_manifests(names.state_changes, p)
        for r in store.read_segment(h)
    )
    assert kept == {"run-held": 100}
    assert {m.segment_name for m in outcome.hold_segments} == {
        h.segment_name
        for p in store.partitions(names.state_changes)
        for h in store.list_hold_manifests(names.state_changes, p)
    }
    common = ["--policy", str(policy), "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    checked = CliRunner().invoke(
        app, ["archive", "verify", "--topic", "state-changes", "--json", *common]
    )
    assert checked.exit_code == 0, checked.output
    assert sum(r["held_records"] for r in json.loads(checked.output)) == 100
