"""`check_topic`'s findings in full: the topic each names, the advice each gives, the bounds.

``test_topic_checks.py`` proves which settings are findings; here what a finding says (the
operator acts on it, and ``topics ensure --fix`` applies it to the topic it names) and the
boundaries of the replica rules. Found by mutation testing (docs/testing.md).
"""

from __future__ import annotations

import pytest

from runstate.streams.topic_checks import TopicFacts, check_topic
from runstate.streams.topics import TopicNames, topic_specs

NAMES = TopicNames("t")
SPECS = {s.name: s for s in topic_specs(NAMES, partitions=4)}
CANNOT = (
    "not fixable in place: partitions can only grow, and growing them re-keys runs (a run's"
    " new records would land in another partition than its history and state); recreate the"
    " topics (data is lost) or use another RUNSTATE_TOPIC_PREFIX"
)


def facts(name: str, *, partitions: int = 4, replicas: int = 1, **config: str) -> TopicFacts:
    have = {**SPECS[name].config, **{k.replace("_", "."): v for k, v in config.items()}}
    return TopicFacts(name, partitions=partitions, replication_factor=replicas, config=have)


def test_every_finding_names_its_topic() -> None:
    changelog, events = NAMES.runs_changelog, NAMES.events
    wrong = {
        changelog: facts(changelog, partitions=2, cleanup_policy="delete", min_insync_replicas="3"),
        events: facts(events, partitions=2, retention_ms="1000"),
    }
    for name, fact in wrong.items():
        found = check_topic(SPECS[name], fact, partitions_of={events: 4})
        assert len(found) >= 2
        assert {f.topic for f in found} == {name}
    warned = check_topic(
        SPECS[events], facts(events, replicas=3, min_insync_replicas="1"), partitions_of={}
    )
    assert [(f.topic, f.severity) for f in warned] == [(events, "warning")]


def test_a_partition_count_finding_says_why_and_what_to_do() -> None:
    changelog = NAMES.runs_changelog
    [co] = check_topic(
        SPECS[changelog], facts(changelog, partitions=2), partitions_of={NAMES.events: 4}
    )
    assert co.message == (
        f"{changelog}: 2 partitions but {NAMES.events} has 4 (the runtime co-partitions them:"
        f" partition N of one goes with partition N of the other); {CANNOT}"
    )
    events = NAMES.events
    [count] = check_topic(SPECS[events], facts(events, partitions=6), partitions_of={events: 6})
    assert count.message == (
        f"{events}: 6 partitions, expected 4; {CANNOT} (or pass --partitions 6 if every"
        " partitioned topic has that many)"
    )


def test_min_insync_above_several_replicas_counts_them() -> None:
    events = NAMES.events
    [finding] = check_topic(
        SPECS[events], facts(events, replicas=2, min_insync_replicas="3"), partitions_of={}
    )
    assert finding.message == (
        f"{events}: min.insync.replicas=3 but only 2 replicas: every acks=all write fails"
        " (NOT_ENOUGH_REPLICAS)"
    )
    assert finding.fix == {"min.insync.replicas": "2"}


def test_min_insync_of_one_with_two_replicas_is_already_a_warning() -> None:
    events = NAMES.events
    [finding] = check_topic(
        SPECS[events], facts(events, replicas=2, min_insync_replicas="1"), partitions_of={}
    )
    assert finding.message == (
        f"{events}: min.insync.replicas=1 with 2 replicas: a write acknowledged by the leader"
        " alone is lost if that broker fails before a follower copied it; consider"
        " min.insync.replicas=2 (kafka-configs --alter)"
    )
    assert (
        check_topic(
            SPECS[events], facts(events, replicas=1, min_insync_replicas="1"), partitions_of={}
        )
        == []
    )


@pytest.mark.parametrize("raw", ["abc", "", "1-", "X2", "-1"])
def test_a_min_insync_that_is_no_positive_number_is_not_judged(raw: str) -> None:
    events = NAMES.events
    found = check_topic(
        SPECS[events], facts(events, replicas=1, min_insync_replicas=raw), partitions_of={}
    )
    assert found == []
