"""`runstate topics ensure` against the real broker, output piped as in a log or a script."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs
from tests.cli_process import runstate_cli

pytestmark = pytest.mark.integration


def test_ensure_prints_every_topic_name_whole_and_nothing_on_stderr(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("cli")
    command = ["topics", "ensure", "--partitions", "2", "--bootstrap", kafka_bootstrap]
    done = runstate_cli(*command, cwd=tmp_path, env={"RUNSTATE_TOPIC_PREFIX": prefix})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for spec in topic_specs(TopicNames(prefix), partitions=2):
        assert spec.name in done.stdout  # e.g. <prefix>.runs-changelog: long names, not cut


def _ensure(bootstrap: str, prefix: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["topics", "ensure", "--partitions", "2", "--bootstrap", bootstrap, *args]
    return runstate_cli(*command, cwd=cwd, env={"RUNSTATE_TOPIC_PREFIX": prefix})


def test_ensure_refuses_wrong_settings_then_fix_changes_them_and_ensure_says_ok(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("cli")
    names = TopicNames(prefix)
    wrong = {
        names.events: {"retention.bytes": "1073741824"},
        names.schemas: {"cleanup.policy": "delete"},
        names.state_changes: {"min.insync.replicas": "3"},
    }
    ensure_topics(
        admin_client(kafka_bootstrap),
        [
            replace(s, config={**s.config, **wrong.get(s.name, {})})
            for s in topic_specs(names, partitions=2)
        ],
    )

    refused = _ensure(kafka_bootstrap, prefix, tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: existing topics differ from what runstate needs")
    settings = [line for line in refused.stderr.splitlines() if line.startswith("  ")]
    assert [line.split(" (")[0].split(":", 1)[1] for line in settings] == [
        " retention.bytes=1073741824, expected -1",
        " min.insync.replicas=3 but only 1 replica: every acks=all write fails",
        " cleanup.policy=delete, expected compact",
    ]
    assert "Traceback" not in refused.stderr

    fixed = _ensure(kafka_bootstrap, prefix, tmp_path, "--fix")
    assert fixed.returncode == 0, fixed.stderr
    assert sorted(line for line in fixed.stdout.splitlines() if line.startswith("changed:")) == [
        f"changed: {names.events}: retention.bytes=-1 (was 1073741824)",
        f"changed: {names.schemas}: cleanup.policy=compact (was delete)",
        f"changed: {names.state_changes}: min.insync.replicas=1 (was 3)",
    ]
    assert fixed.stdout.count("fixed") == 3

    again = _ensure(kafka_bootstrap, prefix, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr == "" and "changed:" not in again.stdout and "fixed" not in again.stdout
    assert again.stdout.count(" ok ") == len(topic_specs(names, partitions=2))


def test_ensure_fix_refuses_a_partition_mismatch_and_says_why(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("cli")
    names = TopicNames(prefix)
    ensure_topics(admin_client(kafka_bootstrap), topic_specs(names, partitions=1))

    refused = _ensure(kafka_bootstrap, prefix, tmp_path, "--fix")
    assert refused.returncode == 1
    assert f"  {names.events}: 1 partitions, expected 2; not fixable in place" in refused.stderr
    assert "growing them re-keys runs" in refused.stderr
    assert "(or pass --partitions 1 if every partitioned topic has that many)" in refused.stderr
    assert "changed:" not in refused.stderr
