"""``replay --all --verify`` against the real processor's latest-state topic."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from runstate.cli import app
from runstate.retention.apply import apply_retention, plan_retention
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import load_context
from runstate.retention.kafka_log import ConfluentKafkaLog
from runstate.schemas.convert import encode_event
from runstate.schemas.events import AgentEvent, ModelCalled, RunStarted, StepCompleted
from runstate.settings import load_settings
from tests.workers import Deployment, wait_processed_all

from .kafka_support import generate_runs, in_time_order, produce, write_policy


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_replay_of_archive_and_kafka_agrees_with_the_live_processor(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    deployment = Deployment(kafka_bootstrap, unique_name("live"), 3, tmp_path)
    deployment.ensure_topics()
    names = deployment.names
    policy = write_policy(tmp_path / "policy.yaml", names, target=f"local:{tmp_path / 'a'}")
    context = load_context(policy, bootstrap_servers=kafka_bootstrap, topic_prefix=names.prefix)
    # Every approval in these runs is decided, so the processor emits no expiries of its own.
    events = in_time_order(generate_runs(150, seed=4))
    worker = deployment.worker("w1").start()
    try:
        worker.wait_ready(partitions=3)
        produce(kafka_bootstrap, names.prefix, events[:300])
        other = next(e for e in events if e.run_id != events[0].run_id)
        _produce_what_live_dead_letters(kafka_bootstrap, names.events, events[0], other)
        # Two kill -9 while the bad records and more events are in flight.
        for chunk in (events[300:600], events[600:900]):
            produce(kafka_bootstrap, names.prefix, chunk)
            worker.kill9()
            worker.start().wait_ready(partitions=3)
        wait_processed_all(deployment, worker)
        config = ArchiverConfig(
            kafka_bootstrap, names.events, f"{names.prefix}-arch", roll_records=100
        )
        Archiver(config, context.store(names.events)).run(once=True)
        kafka = ConfluentKafkaLog(kafka_bootstrap)
        outcome = apply_retention(
            context, kafka, plan_retention(context, kafka, now=datetime.now(UTC))
        )
        assert outcome.ok and outcome.trimmed
        produce(kafka_bootstrap, names.prefix, events[900:])
        wait_processed_all(deployment, worker)
        args = [
            "replay",
            "--all",
            "--verify",
            "--json",
            "--policy",
            str(policy),
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            names.prefix,
            "--no-progress",
        ]

        result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})

        assert result.exit_code == 0, result.output + worker.tail()
        assert '"mismatches": []' in result.output
        assert '"runs_replayed": 150' in result.output and '"runs_live": 150' in result.output
        assert "4 set aside" in result.output, result.output
        for reason in ("key_mismatch 1", "missing_key 1", "oversize 1", "undecodable 1"):
            assert reason in result.output, result.output
        assert "1 rejected" in result.output  # the illegal StepCompleted, rejected live too

        # One archived segment removed: verify names its range and fails.
        store = context.store(names.events)
        lost = next(
            m
            for p in store.partitions(names.events)
            for m in store.list_manifests(names.events, p)[1:]
            if m.is_live
        )
        store._delete(lost.manifest_name)  # type: ignore[attr-defined]
        store._delete(lost.segment_name)  # type: ignore[attr-defined]
        verify_args = ["archive", "verify", "--policy", str(policy), *args[6:10]]
        checked = CliRunner().invoke(app, verify_args, env={"COLUMNS": "400"})
        assert checked.exit_code == 1, checked.output
        assert f"gap: offsets {lost.first_offset}..{lost.last_offset}" in checked.output
    finally:
        deployment.close()


def _produce_what_live_dead_letters(
    bootstrap: str, topic: str, some: AgentEvent, other: AgentEvent
) -> None:
    """A model call of run ``some`` keyed by run ``other``, the same event with no key, a
    RunStarted over the size limit, bytes that are not Avro, and a step completed that never
    started: the processor dead-letters all of them, so a replay that applied them would
    rebuild states that never existed (issue 11)."""
    now = datetime.now(UTC).replace(microsecond=0)
    call = ModelCalled(
        event_id=str(uuid.uuid4()),
        run_id=some.run_id,
        occurred_at=now,
        producer="test",
        model_request_id="req-wrong-key",
        model="m",
    )
    huge = RunStarted(
        event_id=str(uuid.uuid4()),
        run_id="run-too-big",
        occurred_at=now,
        producer="test",
        agent="a",
        input="x" * (load_settings().max_event_bytes + 1000),
        prompt_version="p",
        owner="o",
        source="s",
    )
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    producer.produce(topic, key=other.run_id.encode(), value=encode_event(call))
    producer.produce(topic, value=encode_event(call))
    producer.produce(topic, key=b"run-too-big", value=encode_event(huge))
    producer.produce(topic, key=some.run_id.encode(), value=b"plain text, not avro")
    illegal = StepCompleted(
        event_id=str(uuid.uuid4()),
        run_id=some.run_id,
        occurred_at=now,
        producer="test",
        step="a-step-that-never-started",
        attempt=1,
    )
    producer.produce(topic, key=some.run_id.encode(), value=encode_event(illegal))
    assert producer.flush(30) == 0
