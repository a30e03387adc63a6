"""``replay --all --verify`` against the real processor's latest-state topic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstate.cli import app
from runstate.retention.apply import apply_retention, plan_retention
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import load_context
from runstate.retention.kafka_log import ConfluentKafkaLog
from tests.processors.processor_support import Deployment, wait_processed_all

from .kafka_support import generate_runs, in_time_order, produce, write_policy


@pytest.mark.integration
@pytest.mark.timeout(120)
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
        produce(kafka_bootstrap, names.prefix, events[:900])
        wait_processed_all(deployment, worker)
        config = ArchiverConfig(kafka_bootstrap, names.events, f"{names.prefix}-arch")
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

        result = CliRunner().invoke(app, args)

        assert result.exit_code == 0, result.output + worker.tail()
        assert '"mismatches": []' in result.output
        assert '"runs_replayed": 150' in result.output and '"runs_live": 150' in result.output
    finally:
        deployment.close()
