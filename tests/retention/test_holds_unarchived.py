"""Legal holds on a topic that is not archived: held runs' records go to its hold_archive.

Each test runs once per backend (local and S3 over moto), the hold archive being the store
under test; the topic is ``state-changes``, three runs round-robin by offset, one held.
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
from runstate.errors import PolicyError
from runstate.retention import (
    BlobArchive,
    parse_policy,
    verify,
)
from runstate.retention.apply import RetentionOutcome, apply_retention, plan_retention
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.holds import keep_held_before_trim
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.streams.producer import producer_config
from runstate.streams.reader import read_topic

from .kafka_support import (
    create_topics,
)
from .support import (
    HOLD_NAMES,
    HOLD_NOW,
    HOLD_OFFSETS,
    HOLD_RUNS,
    T0_MS,
    MemoryKafka,
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
    context = hold_context(archive_store, holds=("run-held",))
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
    lifted = _apply_changes(hold_context(archive_store, holds=()), kafka)
    assert {m.segment_name for m in lifted.expired} == {
        h.segment_name for h in [hold, *again.hold_segments]
    }
    assert _kept(archive_store) == {}


def test_without_a_hold_archive_holds_stop_the_trim_of_an_unarchived_topic(
    archive_store: BlobArchive,
) -> None:
    kafka = _changes(0, OFFSETS - 1)
    context = hold_context(archive_store, holds=("run-held",), hold_archive=False)

    plan = plan_retention(context, kafka, now=NOW, topics=["state-changes"])

    (trim,) = plan.trims
    assert trim.plan.trim_to is None and "hold_archive" in trim.plan.reason
    assert apply_retention(context, kafka, plan).trimmed == {}
    assert _changes_in_kafka(kafka) == {"run-a": 30, "run-b": 30, "run-held": 30}
    # Without holds the same topic is trimmed after hot, as before.
    free = hold_context(archive_store, holds=(), hold_archive=False)
    assert _apply_changes(free, kafka).trimmed == {(CHANGES, 0): OFFSETS}


def test_a_trim_interrupted_after_keeping_the_held_records_resumes_without_overlap(
    archive_store: BlobArchive,
) -> None:
    kafka = _changes(0, 59)
    context = hold_context(archive_store, holds=("run-held",))
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
