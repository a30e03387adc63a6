"""Compliance replay: archive + Kafka, checked against the test's own fold of the events."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]
from confluent_kafka import Producer
from typer.testing import CliRunner

from runstate.cli import app
from runstate.errors import ReplayError
from runstate.retention.apply import apply_retention, plan_retention
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import RetentionContext, load_context
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.retention.manifest import SegmentManifest
from runstate.retention.replay import HistorySource, plan_partition, replay_all, replay_until
from runstate.runs.reducer import fold
from runstate.runs.state_codec import encode_state
from runstate.runs.summary import encode_summary, summarize
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import encode
from runstate.schemas.convert import event_to_record
from runstate.schemas.events import RunStarted
from runstate.streams.producer import Delivery, producer_config
from tests.factories import T0, make_run

from .kafka_support import (
    create_topics,
    generate_runs,
    in_time_order,
    oracle,
    produce,
    write_policy,
)
from .support import CREATED

# -- plan_partition: pure ------------------------------------------------------------------


def _manifest(first: int, last: int, *, expired: bool = False) -> SegmentManifest:
    return SegmentManifest(
        topic="t",
        partition=0,
        first_offset=first,
        last_offset=last,
        first_timestamp=CREATED,
        last_timestamp=CREATED,
        record_count=last - first + 1,
        sha256="0" * 64,
        size_bytes=1,
        codec="deflate",
        created_at=CREATED,
        expired_at=CREATED if expired else None,
    )


def test_history_reads_the_archive_then_kafka_from_the_archive_end() -> None:
    span = plan_partition([_manifest(0, 9), _manifest(10, 19)], 0, kafka_low=20, kafka_end=30)
    assert span.archive_end == 20
    assert span.records == 30


def test_kafka_may_overlap_the_archive() -> None:
    span = plan_partition([_manifest(0, 9)], 0, kafka_low=5, kafka_end=30)
    assert (span.archive_end, span.records) == (10, 30)


def test_a_gap_between_archive_and_kafka_is_named() -> None:
    with pytest.raises(ReplayError, match=r"offsets 10\.\.14 of t/0"):
        plan_partition([_manifest(0, 9)], 0, kafka_low=15, kafka_end=30, topic="t")


def test_an_archive_hole_is_fine_while_kafka_still_holds_it() -> None:
    span = plan_partition([_manifest(0, 9), _manifest(20, 29)], 0, kafka_low=0, kafka_end=30)
    assert span.archive_end == 10  # Kafka supplies 10.. (and 20..29 again, not the archive)
    with pytest.raises(ReplayError, match=r"offsets 10\.\.14"):
        plan_partition([_manifest(0, 9), _manifest(20, 29)], 0, kafka_low=15, kafka_end=30)


def test_an_unarchived_partition_trimmed_by_someone_else_is_a_gap() -> None:
    with pytest.raises(ReplayError, match=r"offsets 0\.\.4"):
        plan_partition([], 0, kafka_low=5, kafka_end=10)


def test_expired_segments_are_reported_not_read() -> None:
    span = plan_partition(
        [_manifest(0, 9, expired=True), _manifest(10, 19)], 0, kafka_low=20, kafka_end=20
    )
    assert span.expired == ((0, 9),)
    assert span.records == 10


# -- the real thing --------------------------------------------------------------------


@dataclasses.dataclass
class World:
    """A deployment whose history is split: archived and trimmed, then more in Kafka."""

    context: RetentionContext
    source: HistorySource
    policy_path: Path
    deliveries: list[Delivery]
    events: list[Any]


def _archive_once(context: RetentionContext, group: str) -> None:
    topic = context.names.events
    config = ArchiverConfig(context.bootstrap_servers, topic, group, roll_records=500)
    Archiver(config, context.store(topic)).run(once=True)


def _build_world(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    *,
    target: str,
    endpoint: str | None,
    runs: int,
    split: float = 0.6,
) -> World:
    names = create_topics(bootstrap, prefix)
    policy = write_policy(tmp_path / "policy.yaml", names, target=target, endpoint=endpoint)
    context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=prefix)
    events = in_time_order(generate_runs(runs, seed=5))
    cut = int(len(events) * split)
    deliveries = produce(bootstrap, prefix, events[:cut])
    _archive_once(context, f"{prefix}-archiver")
    kafka = ConfluentKafkaLog(bootstrap)
    plan = plan_retention(context, kafka, now=datetime.now(UTC), topics=["events"])
    outcome = apply_retention(context, kafka, plan)
    assert outcome.ok and outcome.trimmed
    for (_topic, partition), low in outcome.trimmed.items():
        assert low == context.store(names.events).archived_watermark(names.events, partition)
    assert all(low > 0 for low, _ in kafka.watermarks(names.events).values())
    deliveries += produce(bootstrap, prefix, events[cut:])
    source = HistorySource(
        context.store(names.events), kafka, bootstrap, names.events, context.event_codec()
    )
    return World(context, source, policy, deliveries, events)


@pytest.fixture(scope="module", params=["local", "s3"])
def world(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    """1,000 runs: 60% of their events archived and trimmed from Kafka, 40% only in Kafka.

    Built once per backend for the module: the tests only read it (the verify test writes
    the latest-state topic, which nothing else reads).
    """
    prefix = f"replay-{request.param}-{uuid.uuid4().hex[:8]}"
    tmp_path = tmp_path_factory.mktemp(prefix)
    if request.param == "local":
        target, endpoint = f"local:{tmp_path / 'archive'}", None
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"replay-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"})
        ).create_bucket(Bucket=bucket)
        target = f"s3://{bucket}/runstate/events"
    return _build_world(
        kafka_bootstrap, prefix, tmp_path, target=target, endpoint=endpoint, runs=1000
    )


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_replay_all_equals_the_fold_of_the_generated_events(world: World) -> None:
    result = replay_all(world.source)

    assert result.stats.archive_records > 0 and result.stats.kafka_records > 0
    assert result.stats.records == len(world.events)
    assert result.stats.set_aside == {}
    expected = oracle(world.deliveries, world.events)
    assert len(expected) == 1000
    assert result.states == expected
    low = {p: m[0] for p, m in world.source.kafka.watermarks(world.source.topic).items()}
    spanning = {
        e.run_id
        for d, e in zip(world.deliveries, world.events, strict=True)
        if d.offset < low[d.partition]
    }
    assert len(spanning) > 100  # many runs really start in the archive
    print(
        f"\nreplay ({world.source.store.location.split(':')[0]}): {result.stats.records} events,"
        f" {result.stats.archive_records} from the archive, in {result.stats.elapsed_s:.2f}s:"
        f" {result.stats.events_per_s:,.0f} events/s"
    )


@pytest.mark.integration
def test_replay_at_a_time_equals_the_fold_until_that_time(world: World) -> None:
    at = T0 + timedelta(seconds=1100)  # runs overlap here: some done, some mid-way
    expected = oracle(world.deliveries, world.events, until=at)

    everyone = replay_until(at, world.source)
    assert everyone.states == expected

    for run_id in ("run-5-00540", "run-5-00551", "run-5-00549"):
        one = replay_until(at, world.source, run_id=run_id)
        assert one.states.get(run_id) == expected.get(run_id)
        assert set(one.states) <= {run_id}


@pytest.mark.integration
def test_cli_replay_run_at_time_with_history(world: World) -> None:
    run_id = "run-5-00001"  # two steps with an approval (rejected) after the first
    at = T0 + timedelta(seconds=8)
    expected = oracle(world.deliveries, world.events, until=at)[run_id]
    full = oracle(world.deliveries, world.events)[run_id]
    assert expected.version < full.version
    common = [
        "replay",
        "--run",
        run_id,
        "--policy",
        str(world.policy_path),
        "--bootstrap",
        world.context.bootstrap_servers,
        "--topic-prefix",
        world.context.names.prefix,
        "--no-progress",
    ]
    result = CliRunner().invoke(app, [*common, "--at", at.isoformat()])
    assert result.exit_code == 0, result.output
    assert f'"version": {expected.version}\n' in result.output

    result = CliRunner().invoke(app, [*common, "--history", "--json"])
    assert result.exit_code == 0, result.output
    assert f'"version": {full.version}\n' in result.output
    assert '"ApprovalRequested"' in result.output and '"ApprovalRejected"' in result.output
    assert '"actor": "bob"' in result.output  # who rejected
    assert result.output.count('"outcome": "applied"') == full.version

    wide = {"COLUMNS": "220"}  # rich wraps to the terminal; CliRunner's is 80 wide
    result = CliRunner().invoke(app, [*common, "--history"], env=wide)  # the rich table
    assert result.exit_code == 0, result.output
    assert "ApprovalRejected" in result.output and "│ bob" in result.output
    assert f'"version": {full.version}\n' in result.output


@pytest.mark.integration
def test_v1_events_in_the_archive_replay_with_v2_code(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("v1")
    names = create_topics(kafka_bootstrap, prefix)
    policy = write_policy(tmp_path / "policy.yaml", names, target=f"local:{tmp_path / 'a'}")
    context = load_context(policy, bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    events = make_run("run-v1", with_approval=True, with_action=True)
    started = events[0]
    assert isinstance(started, RunStarted)
    v1 = default_catalog().versions("runstate.events.RunStarted")[0]
    assert v1.version == 1
    _, record = event_to_record(started)
    record.pop("tenant")
    record.pop("epoch")  # v1 had neither (tenant came in v2, the lease epoch in v3)
    v1_bytes = encode(record, v1)

    # Written the way a v1-era producer wrote it: same partitioner, v1 fingerprint.
    producer = Producer(producer_config(kafka_bootstrap))
    where: list[tuple[int | None, int | None]] = []
    producer.produce(
        names.events,
        key=b"run-v1",
        value=v1_bytes,
        on_delivery=lambda err, msg: where.append((msg.partition(), msg.offset())),
    )
    producer.flush(30)
    partition, offset = where[0]
    assert partition is not None and offset is not None
    deliveries = [Delivery(names.events, partition, offset, "run-v1", started.event_id)]
    deliveries += produce(kafka_bootstrap, prefix, events[1:])
    _archive_once(context, f"{prefix}-archiver")
    kafka = ConfluentKafkaLog(kafka_bootstrap)
    apply_retention(context, kafka, plan_retention(context, kafka, now=datetime.now(UTC)))
    store = context.store(names.events)
    manifests = [
        m for p in store.partitions(names.events) for m in store.list_manifests(names.events, p)
    ]
    assert v1.fingerprint_hex in {fp for m in manifests for fp in m.writer_fingerprints}

    result = replay_all(
        HistorySource(store, kafka, kafka_bootstrap, names.events, context.event_codec())
    )
    state = result.states["run-v1"]
    assert state.tenant is None and state.owner == started.owner
    pairs = [(d.offset, e) for d, e in zip(deliveries, events, strict=True)]
    assert state == fold(pairs)
    assert result.stats.archive_records == len(events)


@pytest.mark.integration
def test_verify_reports_a_live_state_that_differs(world: World) -> None:
    """The live processor is stood in for: latest-state records (summaries) written from the
    oracle; one run's differs in a field and in a count."""
    expected = oracle(world.deliveries, world.events)
    names = world.context.names
    producer = Producer({"bootstrap.servers": world.context.bootstrap_servers})
    altered = "run-5-00007"
    for run_id, state in expected.items():
        summary = summarize(state)
        if run_id == altered:
            summary = dataclasses.replace(
                summary, owner="someone-else", model_call_count=summary.model_call_count + 1
            )
        producer.produce(names.latest_state, key=run_id.encode(), value=encode_summary(summary))
    producer.flush(30)
    args = [
        "replay",
        "--all",
        "--verify",
        "--json",
        "--policy",
        str(world.policy_path),
        "--bootstrap",
        world.context.bootstrap_servers,
        "--topic-prefix",
        names.prefix,
        "--no-progress",
    ]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 1, result.output
    assert "run-5-00007: owner: replayed 'team-procurement', live 'someone-else'" in result.output
    calls = summarize(expected[altered]).model_call_count
    assert f"run-5-00007: model_call_count: replayed {calls}, live {calls + 1}" in result.output
    assert result.output.count("run-5-") == 2

    # A whole RunState record (what a worker before the summary wrote) reads as its summary.
    producer.produce(
        names.latest_state, key=altered.encode(), value=encode_state(expected[altered])
    )
    producer.flush(30)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"mismatches": []' in result.output
