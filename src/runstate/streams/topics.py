"""The topics runstate needs, their configs, and ``ensure`` that creates or verifies them.

A topic that exists with a setting a promise depends on set wrong is an error, not a silent
difference: keys would route to other partitions than the state tables expect, a compacted
table would lose history it was meant to keep, Kafka would expire events that were never
archived, or every acks=all write would fail. What is checked, and what ``--fix`` may change
in place, is decided in :mod:`runstate.streams.topic_checks`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from runstate.errors import TopicMismatch
from runstate.streams import clients
from runstate.streams.topic_checks import Finding, TopicFacts, TopicSpec, check_topic

__all__ = [
    "ConfigChange",
    "EnsureReport",
    "TopicNames",
    "TopicSpec",
    "admin_client",
    "ensure_topics",
    "topic_specs",
]


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

    @property
    def data_keys(self) -> str:
        """Wrapped per-subject data keys (compacted; never archived; docs/security.md)."""
        return f"{self.prefix}.data-keys"

    @property
    def erasures(self) -> str:
        """DataSubjectErased records: who erased which subject, when (the audit trail)."""
        return f"{self.prefix}.erasures"


_COMPACTED: Mapping[str, str] = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": "3600000",
}


def topic_specs(names: TopicNames, *, partitions: int) -> list[TopicSpec]:
    """The topics of one deployment. Partitioned topics share the events topic's count so a
    run's events, state and changes live in the same partition number everywhere.

    Events, state changes and dead letters are never deleted by time or size: events leave
    Kafka only through `retention apply`, which trims up to the archived watermark (see
    docs/retention.md), and the other two are the audit trail of changes and of bad input.
    """
    kept: Mapping[str, str] = {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
    }
    return [
        TopicSpec(names.events, partitions, kept, "agent events, keyed by run_id"),
        # The runtime writes partition N of these three with partition N of the events.
        TopicSpec(
            names.runs_changelog,
            partitions,
            _COMPACTED,
            "run-state store changelog",
            co_partitioned_with=names.events,
        ),
        TopicSpec(
            names.latest_state,
            partitions,
            _COMPACTED,
            "latest summary per run",
            co_partitioned_with=names.events,
        ),
        TopicSpec(
            names.state_changes,
            partitions,
            kept,
            "RunStateChanged, one per change",
            co_partitioned_with=names.events,
        ),
        TopicSpec(names.dead_letters, 1, kept, "bad input with the reason"),
        TopicSpec(names.schemas, 1, {"cleanup.policy": "compact"}, "writer schemas by fingerprint"),
        # Tombstones (erasures) and superseded segments go within a day: an erased key must
        # not linger in the log (docs/security.md).
        TopicSpec(
            names.data_keys,
            1,
            {**_COMPACTED, "delete.retention.ms": "86400000", "min.compaction.lag.ms": "0"},
            "wrapped data keys by subject/version",
        ),
        TopicSpec(names.erasures, 1, kept, "DataSubjectErased audit records"),
    ]


def admin_client(bootstrap_servers: str) -> AdminClient:
    """An AdminClient for ``bootstrap_servers`` (librdkafka lines through logging)."""
    return clients.admin_client(bootstrap_servers)


@dataclass(frozen=True)
class ConfigChange:
    """One config ``ensure_topics(fix=True)`` changed in place."""

    topic: str
    key: str
    value: str
    was: str | None

    def __str__(self) -> str:
        return f"{self.topic}: {self.key}={self.value} (was {self.was})"


@dataclass(frozen=True)
class EnsureReport:
    """What ``ensure_topics`` did: topics created and verified, settings changed in place
    (``fix=True``), and doubtful settings left as they are (one line each)."""

    created: list[str]
    verified: list[str]
    fixed: list[ConfigChange]
    warnings: list[str]


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    fix: bool = False,
    timeout_s: float = 30.0,
) -> EnsureReport:
    """Create missing topics; check every setting of existing ones that a promise depends on.

    With ``fix``, wrong configs are changed in place (``incremental_alter_configs``) and
    checked again; a wrong partition count is never changed (see
    :mod:`runstate.streams.topic_checks`). Warnings are reported, not changed: they may be
    the operator's choice.

    Raises:
        TopicMismatch: an existing topic still has a wrong setting; the message has one line
            per setting, what it breaks and how to repair it, and the lines of what was
            changed before the refusal.
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
    facts, findings = _findings(admin, present, timeout_s) if present else ({}, [])
    fixed: list[ConfigChange] = []
    if fix and any(f.fix for f in findings if f.severity == "error"):
        wrong = [f for f in findings if f.severity == "error"]
        fixed = _apply_fixes(admin, wrong, facts, timeout_s)
        _, findings = _findings(admin, present, timeout_s)
    errors = [f.message for f in findings if f.severity == "error"]
    if errors:
        fixable = sum(1 for f in findings if f.severity == "error" and f.fix)
        hint = (
            f"\n`runstate topics ensure --fix` changes the {fixable} setting(s) that can be"
            " changed in place (before Kafka deletes anything)."
            if fixable
            else ""
        )
        done = "".join(f"\nchanged: {change}" for change in fixed)
        raise TopicMismatch(
            "existing topics differ from what runstate needs:\n  "
            + "\n  ".join(errors)
            + hint
            + done
        )
    return EnsureReport(
        created=created,
        verified=[s.name for s in present],
        fixed=fixed,
        warnings=[f.message for f in findings if f.severity == "warning"],
    )


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


def _facts(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, TopicFacts]:
    """Partitions, replication factor and configs of existing topics, from the cluster."""
    meta = admin.list_topics(timeout=timeout_s).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    configs = admin.describe_configs(resources, request_timeout=timeout_s)
    facts = {}
    for res, fut in configs.items():
        partitions = meta[res.name].partitions
        facts[res.name] = TopicFacts(
            res.name,
            partitions=len(partitions),
            replication_factor=min((len(p.replicas) for p in partitions.values()), default=0),
            config={key: entry.value for key, entry in fut.result().items()},
        )
    return facts


def _findings(
    admin: AdminClient, specs: list[TopicSpec], timeout_s: float
) -> tuple[dict[str, TopicFacts], list[Finding]]:
    facts = _facts(admin, [s.name for s in specs], timeout_s)
    partitions_of = {name: f.partitions for name, f in facts.items()}
    found = [f for s in specs for f in check_topic(s, facts[s.name], partitions_of=partitions_of)]
    return facts, found


def _apply_fixes(
    admin: AdminClient, findings: list[Finding], facts: Mapping[str, TopicFacts], timeout_s: float
) -> list[ConfigChange]:
    """Set the configs that repair ``findings`` in place; what was changed."""
    changes: dict[str, dict[str, str]] = {}
    done = []
    for f in findings:
        for key, value in (f.fix or {}).items():
            changes.setdefault(f.topic, {})[key] = value
            done.append(ConfigChange(f.topic, key, value, facts[f.topic].config.get(key)))
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in configs.items()
            ],
        )
        for topic, configs in changes.items()
    ]
    for fut in admin.incremental_alter_configs(resources, request_timeout=timeout_s).values():
        fut.result()
    _wait_for_configs(admin, changes, timeout_s)
    return done


def _wait_for_configs(
    admin: AdminClient, changes: Mapping[str, Mapping[str, str]], timeout_s: float
) -> None:
    """An altered config reaches the brokers a moment after the controller accepted it; wait
    until they describe it, so the check that follows sees the change."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        facts = _facts(admin, list(changes), timeout_s)
        if all(
            facts[topic].config.get(key) == value
            for topic, configs in changes.items()
            for key, value in configs.items()
        ):
            return
        time.sleep(0.1)
