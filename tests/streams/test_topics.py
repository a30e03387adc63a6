"""`ensure_topics` creates what is missing and refuses silent differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from runstate.errors import TopicMismatch
from runstate.streams.topics import TopicNames, TopicSpec, admin_client, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def test_creates_then_verifies(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    admin = admin_client(kafka_bootstrap)
    specs = topic_specs(TopicNames(unique_name("t")), partitions=3)
    first = ensure_topics(admin, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    second = ensure_topics(admin, specs)
    assert second.created == [] and sorted(second.verified) == sorted(s.name for s in specs)
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[specs[0].name].partitions) == 3


def test_partition_mismatch_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    ensure_topics(admin, topic_specs(names, partitions=2))
    with pytest.raises(TopicMismatch, match=r"events: 2 partitions, expected 4"):
        ensure_topics(admin, topic_specs(names, partitions=4))


def test_cleanup_policy_mismatch_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    specs = topic_specs(names, partitions=1)
    # someone created the latest-state topic by hand without compaction
    wrong = [s if s.name != names.latest_state else s.__class__(s.name, 1, {}) for s in specs]
    ensure_topics(admin, wrong)
    with pytest.raises(TopicMismatch, match=r"run-state: cleanup.policy=delete, expected compact"):
        ensure_topics(admin, specs)


def test_an_events_topic_that_expires_by_time_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Created with the cluster's default retention (7 days), events would expire unarchived."""
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    specs = topic_specs(names, partitions=1)
    wrong = [
        s if s.name != names.events else s.__class__(s.name, 1, {"retention.ms": "604800000"})
        for s in specs
    ]
    ensure_topics(admin, wrong)
    with pytest.raises(TopicMismatch, match=r"events: retention.ms=604800000, expected -1"):
        ensure_topics(admin, specs)


def _create_wrong(
    admin: AdminClient, names: TopicNames, partitions: int, wrong: dict[str, dict[str, str]]
) -> list[TopicSpec]:
    """Create the deployment's topics with ``wrong`` configs merged in; return the right specs."""
    specs = topic_specs(names, partitions=partitions)
    ensure_topics(
        admin,
        [replace(s, config={**s.config, **wrong.get(s.name, {})}) for s in specs],
    )
    return specs


def test_every_promised_config_is_refused_then_fixed_in_place(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    wrong = {
        names.events: {"retention.ms": "604800000", "min.insync.replicas": "2"},
        names.state_changes: {"retention.bytes": "1073741824"},
        names.dead_letters: {"retention.ms": "86400000"},
        names.runs_changelog: {"cleanup.policy": "delete"},
        names.latest_state: {"cleanup.policy": "compact,delete"},
        names.schemas: {"cleanup.policy": "delete"},
    }
    specs = _create_wrong(admin, names, 2, wrong)
    expected = [
        f"{names.events}: retention.ms=604800000, expected -1",
        f"{names.events}: min.insync.replicas=2 but only 1 replica",
        f"{names.state_changes}: retention.bytes=1073741824, expected -1",
        f"{names.dead_letters}: retention.ms=86400000, expected -1",
        f"{names.runs_changelog}: cleanup.policy=delete, expected compact",
        f"{names.latest_state}: cleanup.policy=compact,delete, expected compact",
        f"{names.schemas}: cleanup.policy=delete, expected compact",
    ]

    with pytest.raises(TopicMismatch) as refused:
        ensure_topics(admin, specs)
    lines = str(refused.value).splitlines()
    for line in expected:
        assert sum(1 for got in lines if got.strip().startswith(line)) == 1, (line, lines)
    assert sum(1 for got in lines if got.startswith("  ")) == len(expected)
    assert "--fix` changes the 7 setting(s)" in str(refused.value)

    fixed = ensure_topics(admin, specs, fix=True)
    assert sorted(str(c) for c in fixed.fixed) == sorted(
        [
            f"{names.events}: retention.ms=-1 (was 604800000)",
            f"{names.events}: min.insync.replicas=1 (was 2)",
            f"{names.state_changes}: retention.bytes=-1 (was 1073741824)",
            f"{names.dead_letters}: retention.ms=-1 (was 86400000)",
            f"{names.runs_changelog}: cleanup.policy=compact (was delete)",
            f"{names.latest_state}: cleanup.policy=compact (was compact,delete)",
            f"{names.schemas}: cleanup.policy=compact (was delete)",
        ]
    )
    again = ensure_topics(admin, specs)
    assert again.fixed == [] and again.warnings == [] and again.created == []
    assert sorted(again.verified) == sorted(s.name for s in specs)
    # Only the wrong settings were changed; the rest of each config is as created.
    res = ConfigResource(ConfigResource.Type.TOPIC, names.runs_changelog)
    config = admin.describe_configs([res])[res].result()
    assert config["min.cleanable.dirty.ratio"].value == "0.1"


def test_a_changelog_not_co_partitioned_with_the_events_is_refused_even_with_fix(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    specs = topic_specs(names, partitions=2)
    # The changelog created by hand with one partition, and one fixable config besides.
    ensure_topics(
        admin,
        [
            replace(s, partitions=1)
            if s.name == names.runs_changelog
            else replace(s, config={**s.config, "retention.ms": "3600000"})
            if s.name == names.dead_letters
            else s
            for s in specs
        ],
    )
    with pytest.raises(TopicMismatch) as refused:
        ensure_topics(admin, specs, fix=True)
    message = str(refused.value)
    assert (
        f"  {names.runs_changelog}: 1 partitions but {names.events} has 2 (the runtime"
        " co-partitions them" in message
    )
    assert "not fixable in place: partitions can only grow, and growing them re-keys runs" in (
        message
    )
    # What could be fixed was, and the refusal says so; the partition count was left alone.
    assert f"changed: {names.dead_letters}: retention.ms=-1 (was 3600000)" in message
    assert f"{names.dead_letters}: retention" not in message.split("changed:")[0]
    assert len(admin.list_topics(timeout=10).topics[names.runs_changelog].partitions) == 1
