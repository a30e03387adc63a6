"""What an existing topic must have for runstate's promises to hold, checked without Kafka.

``ensure_topics`` (:mod:`runstate.streams.topics`) reads each existing topic's partitions,
replication factor and configs into a :class:`TopicFacts`; :func:`check_topic` compares them
with the topic's :class:`TopicSpec` and returns one :class:`Finding` per wrong setting. A
finding carries the configs that repair it in place, or none when it cannot be repaired
without losing or re-keying data (a partition count), so ``--fix`` and the refusal message
are decided here, in one place, and tested with plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "PROMISED_CONFIGS",
    "Finding",
    "TopicFacts",
    "TopicSpec",
    "check_topic",
    "min_insync_for",
]


@dataclass(frozen=True)
class TopicSpec:
    """A topic runstate needs: its name, partition count and the configs it is created with.

    ``co_partitioned_with`` names the topic whose partition count this one must equal on the
    cluster (not only in the spec): the runtime reads partition N of both together.
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""
    co_partitioned_with: str | None = None


#: The configs of a spec that a promise depends on, with what breaks when one is wrong. The
#: others in a spec (segment.ms, min.cleanable.dirty.ratio) are tuning and are not checked.
PROMISED_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "a compacted topic keeps one record per key, a deleting one expires"
    " records; the other policy loses history or keeps what should go",
    "retention.ms": "Kafka would delete records by age, before they are archived",
    "retention.bytes": "Kafka would delete the oldest records once a partition is that big,"
    " before they are archived",
}


@dataclass(frozen=True)
class TopicFacts:
    """What the cluster says about one existing topic."""

    name: str
    partitions: int
    #: The smallest replica count of any of its partitions.
    replication_factor: int
    config: Mapping[str, str]


@dataclass(frozen=True)
class Finding:
    """One setting of one topic that is wrong (``error``) or doubtful (``warning``).

    ``fix`` holds the configs that repair it in place (``kafka-configs --alter`` or
    ``topics ensure --fix``); None when it cannot be repaired in place.
    """

    topic: str
    message: str
    severity: Literal["error", "warning"] = "error"
    fix: Mapping[str, str] | None = None


def min_insync_for(replication_factor: int) -> int:
    """The ``min.insync.replicas`` ``--fix`` sets: 2 where there are 2 or more replicas (an
    acknowledged write survives losing a broker), else 1."""
    return min(replication_factor, 2)


def check_topic(
    spec: TopicSpec, facts: TopicFacts, *, partitions_of: Mapping[str, int]
) -> list[Finding]:
    """Every wrong or doubtful setting of an existing topic.

    Args:
        spec: what runstate needs.
        facts: what the cluster has.
        partitions_of: the partition count of each existing topic, for co-partitioning.
    """
    found = [*_partition_findings(spec, facts, partitions_of)]
    for key, why in PROMISED_CONFIGS.items():
        want = spec.config.get(key)
        got = facts.config.get(key)
        if want is not None and got != want:
            found.append(
                Finding(
                    spec.name, f"{spec.name}: {key}={got}, expected {want} ({why})", fix={key: want}
                )
            )
    found.extend(_min_insync_findings(facts))
    return found


def _partition_findings(
    spec: TopicSpec, facts: TopicFacts, partitions_of: Mapping[str, int]
) -> list[Finding]:
    cannot = (
        "not fixable in place: partitions can only grow, and growing them re-keys runs"
        " (a run's new records would land in another partition than its history and state);"
        " recreate the topics (data is lost) or use another RUNSTATE_TOPIC_PREFIX"
    )
    partner = spec.co_partitioned_with
    if partner is not None and partitions_of.get(partner, facts.partitions) != facts.partitions:
        return [
            Finding(
                spec.name,
                f"{spec.name}: {facts.partitions} partitions but {partner} has"
                f" {partitions_of[partner]} (the runtime co-partitions them: partition N of"
                f" one goes with partition N of the other); {cannot}",
            )
        ]
    if facts.partitions != spec.partitions:
        return [
            Finding(
                spec.name,
                f"{spec.name}: {facts.partitions} partitions, expected {spec.partitions};"
                f" {cannot} (or pass --partitions {facts.partitions} if every partitioned"
                " topic has that many)",
            )
        ]
    return []


def _min_insync_findings(facts: TopicFacts) -> list[Finding]:
    raw = facts.config.get("min.insync.replicas")
    if raw is None or not raw.lstrip("-").isdigit():
        return []
    min_insync, replicas = int(raw), facts.replication_factor
    if min_insync > replicas:
        return [
            Finding(
                facts.name,
                f"{facts.name}: min.insync.replicas={min_insync} but only {replicas}"
                f" replica{'s' if replicas != 1 else ''}: every acks=all write fails"
                " (NOT_ENOUGH_REPLICAS)",
                fix={"min.insync.replicas": str(min_insync_for(replicas))},
            )
        ]
    if min_insync == 1 and replicas > 1:
        return [
            Finding(
                facts.name,
                f"{facts.name}: min.insync.replicas=1 with {replicas} replicas: a write"
                " acknowledged by the leader alone is lost if that broker fails before a"
                f" follower copied it; consider min.insync.replicas={min_insync_for(replicas)}"
                " (kafka-configs --alter)",
                severity="warning",
            )
        ]
    return []
