"""The topics runstate needs, their configs, and ``ensure`` that creates or verifies them.

A topic that exists with the wrong partition count or cleanup policy is an error, not a
silent difference: keys would route to other partitions than the state tables expect, or a
compacted table would lose history it was meant to keep.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from runstate.errors import TopicMismatch
from runstate.streams import clients

__all__ = ["TopicNames", "TopicSpec", "admin_client", "ensure_topics", "topic_specs"]

#: Config keys whose mismatch is an error (others are reported as notes only).
#: Configs an existing topic must match: a time or size limit on the events topic would let
#: Kafka delete events that were never archived, without a word.
CHECKED_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes")


@dataclass(frozen=True)
class TopicNames:
    """Every topic name, derived from one prefix so several deployments can share a cluster."""

    prefix: str = "runstate"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def runs_changelog(self) -> str:
        """The processor's store changelog (run heads, entries, index keys), written inside
        its transactions. (The faust processor's was ``<prefix>-processor-runs-changelog``;
        ``topics ensure`` no longer creates it, and an existing one can be deleted.)"""
        return f"{self.prefix}.runs-changelog"

    @property
    def runtime_group(self) -> str:
        """The processor's consumer group."""
        return f"{self.prefix}-runs"

    @property
    def latest_state(self) -> str:
        return f"{self.prefix}.run-state"

    @property
    def state_changes(self) -> str:
        return f"{self.prefix}.state-changes"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}.dead-letters"

    @property
    def schemas(self) -> str:
        return f"{self.prefix}.schemas"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""


_COMPACTED = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
}


def topic_specs(names: TopicNames, *, partitions: int) -> list[TopicSpec]:
    """The topics of one deployment. Partitioned topics share the events topic's count so a
    run's events, state and changes live in the same partition number everywhere."""
    return [
        TopicSpec(
            names.events,
            partitions,
            # Never deleted by time: events leave Kafka only through `retention apply`,
            # which trims up to the archived watermark (see docs/retention.md).
            {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
            "agent events, keyed by run_id",
        ),
        TopicSpec(names.runs_changelog, partitions, _COMPACTED, "run-state store changelog"),
        TopicSpec(names.latest_state, partitions, _COMPACTED, "latest summary per run"),
        TopicSpec(
            names.state_changes,
            partitions,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            "RunStateChanged, one per change",
        ),
        TopicSpec(
            names.dead_letters,
            1,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
            "bad input with the reason",
        ),
        TopicSpec(names.schemas, 1, {"cleanup.policy": "compact"}, "writer schemas by fingerprint"),
    ]


def admin_client(bootstrap_servers: str) -> AdminClient:
    """An AdminClient for ``bootstrap_servers`` (librdkafka lines through logging)."""
    return clients.admin_client(bootstrap_servers)


@dataclass(frozen=True)
class EnsureReport:
    created: list[str]
    verified: list[str]


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> EnsureReport:
    """Create missing topics; check that existing ones match.

    Raises:
        TopicMismatch: an existing topic has another partition count or cleanup policy;
            the message lists every difference and how to fix it.
    """
    specs = list(specs)
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, s.partitions, replication_factor, config=dict(s.config))
                for s in missing
            ],
            operation_timeout=timeout_s,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    if created:
        _wait_for_leaders(admin, created, timeout_s)
    present = [s for s in specs if s.name not in created]
    problems = _mismatches(admin, present, timeout_s) if present else []
    if problems:
        raise TopicMismatch(
            "existing topics differ from what runstate needs:\n  "
            + "\n  ".join(problems)
            + "\nFix a retention setting with `kafka-configs --alter --add-config"
            " retention.ms=-1` (before Kafka deletes anything), or use another"
            " RUNSTATE_TOPIC_PREFIX, or recreate the topics (data is lost)."
        )
    return EnsureReport(created=created, verified=[s.name for s in present])


def _wait_for_leaders(admin: AdminClient, topics: list[str], timeout_s: float) -> None:
    """New partitions answer NOT_LEADER until the controller elected one; wait for that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout_s).topics
        if all(
            t in meta
            and meta[t].partitions
            and all(p.leader >= 0 for p in meta[t].partitions.values())
            for t in topics
        ):
            return
        time.sleep(0.1)


def _mismatches(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> list[str]:
    meta = admin.list_topics(timeout=timeout_s).topics
    problems = []
    for s in specs:
        have = len(meta[s.name].partitions)
        if have != s.partitions:
            problems.append(f"{s.name}: {have} partitions, expected {s.partitions}")
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    configs = admin.describe_configs(resources, request_timeout=timeout_s)
    by_name = {s.name: s for s in specs}
    for res, fut in configs.items():
        actual = fut.result()
        spec = by_name[res.name]
        for key in CHECKED_CONFIGS:
            want = spec.config.get(key)
            got = actual[key].value if key in actual else None
            if want is not None and got != want:
                problems.append(f"{spec.name}: {key}={got}, expected {want}")
    return problems
