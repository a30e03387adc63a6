"""`check_topic`: every setting of an existing topic that a promise depends on (pure)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from runstate.streams.topic_checks import TopicFacts, check_topic, min_insync_for
from runstate.streams.topics import TopicNames, TopicSpec, topic_specs

NAMES = TopicNames("t")
SPECS = {s.name: s for s in topic_specs(NAMES, partitions=4)}


def _facts(
    spec: TopicSpec,
    *,
    partitions: int | None = None,
    replicas: int = 1,
    **config: str,
) -> TopicFacts:
    """The facts of a topic created from ``spec``, with ``config`` overriding (dots as _)."""
    have = {"min.insync.replicas": "1", "segment.ms": "604800000", **spec.config}
    have.update({k.replace("_", "."): v for k, v in config.items()})
    return TopicFacts(
        spec.name,
        partitions=spec.partitions if partitions is None else partitions,
        replication_factor=replicas,
        config=have,
    )


def _check(facts: TopicFacts, partitions_of: Mapping[str, int] | None = None) -> list[str]:
    return [
        f"{f.severity}: {f.message}"
        for f in check_topic(
            SPECS[facts.name], facts, partitions_of=partitions_of or {NAMES.events: 4}
        )
    ]


def test_topics_as_created_have_no_findings() -> None:
    for spec in SPECS.values():
        assert _check(_facts(spec)) == []


@pytest.mark.parametrize("topic", [NAMES.events, NAMES.state_changes, NAMES.dead_letters])
@pytest.mark.parametrize(
    ("key", "value"), [("retention.ms", "604800000"), ("retention.bytes", "1073741824")]
)
def test_retention_by_time_or_size_on_a_kept_topic_is_a_fixable_error(
    topic: str, key: str, value: str
) -> None:
    [finding] = check_topic(
        SPECS[topic],
        _facts(SPECS[topic], **{key.replace(".", "_"): value}),
        partitions_of={NAMES.events: 4},
    )
    assert finding.severity == "error"
    assert finding.message.startswith(f"{topic}: {key}={value}, expected -1 (Kafka would delete")
    assert finding.fix == {key: "-1"}


@pytest.mark.parametrize("topic", [NAMES.runs_changelog, NAMES.latest_state, NAMES.schemas])
@pytest.mark.parametrize("policy", ["delete", "compact,delete"])
def test_a_table_topic_that_is_not_only_compacted_is_a_fixable_error(
    topic: str, policy: str
) -> None:
    [finding] = check_topic(
        SPECS[topic], _facts(SPECS[topic], cleanup_policy=policy), partitions_of={}
    )
    assert finding.message.startswith(f"{topic}: cleanup.policy={policy}, expected compact")
    assert finding.fix == {"cleanup.policy": "compact"}


def test_an_events_topic_that_is_compacted_is_an_error() -> None:
    assert _check(_facts(SPECS[NAMES.events], cleanup_policy="compact")) == [
        f"error: {NAMES.events}: cleanup.policy=compact, expected delete (a compacted topic"
        " keeps one record per key, a deleting one expires records; the other policy loses"
        " history or keeps what should go)"
    ]


def test_tuning_configs_are_not_checked() -> None:
    facts = _facts(SPECS[NAMES.runs_changelog], min_cleanable_dirty_ratio="0.5")
    assert _check(facts) == []


@pytest.mark.parametrize("topic", [NAMES.runs_changelog, NAMES.latest_state, NAMES.state_changes])
def test_a_co_partitioned_topic_must_have_as_many_partitions_as_the_events_topic(
    topic: str,
) -> None:
    [finding] = check_topic(
        SPECS[topic], _facts(SPECS[topic], partitions=2), partitions_of={NAMES.events: 4}
    )
    assert finding.message.startswith(
        f"{topic}: 2 partitions but {NAMES.events} has 4 (the runtime co-partitions them"
    )
    assert "not fixable in place: partitions can only grow" in finding.message
    assert finding.fix is None


def test_partitions_other_than_asked_are_an_unfixable_error() -> None:
    # Every partitioned topic has 2 while 4 were asked: one line per topic, no co-partition
    # line (they agree with each other).
    found = [
        f
        for name, spec in SPECS.items()
        if spec.partitions == 4
        for f in check_topic(spec, _facts(spec, partitions=2), partitions_of={NAMES.events: 2})
    ]
    assert [f.message.split(";")[0] for f in found] == [
        f"{name}: 2 partitions, expected 4"
        for name in (NAMES.events, NAMES.runs_changelog, NAMES.latest_state, NAMES.state_changes)
    ]
    assert all(f.fix is None and "--partitions 2" in f.message for f in found)


def test_min_insync_replicas_above_the_replication_factor_is_a_fixable_error() -> None:
    [finding] = check_topic(
        SPECS[NAMES.events],
        _facts(SPECS[NAMES.events], min_insync_replicas="2"),
        partitions_of={NAMES.events: 4},
    )
    assert finding.message == (
        f"{NAMES.events}: min.insync.replicas=2 but only 1 replica: every acks=all write"
        " fails (NOT_ENOUGH_REPLICAS)"
    )
    assert finding.fix == {"min.insync.replicas": "1"}


def test_min_insync_replicas_of_one_with_more_replicas_is_a_warning_not_fixed() -> None:
    [finding] = check_topic(
        SPECS[NAMES.events], _facts(SPECS[NAMES.events], replicas=3), partitions_of={}
    )
    assert finding.severity == "warning" and finding.fix is None
    assert "min.insync.replicas=1 with 3 replicas" in finding.message
    assert "consider min.insync.replicas=2" in finding.message
    assert _check(_facts(SPECS[NAMES.events], replicas=3, min_insync_replicas="2")) == []
    assert _check(_facts(SPECS[NAMES.events], replicas=3, min_insync_replicas="3")) == []


def test_min_insync_set_by_fix() -> None:
    assert [min_insync_for(n) for n in (1, 2, 3, 5)] == [1, 2, 2, 2]
