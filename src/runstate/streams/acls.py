"""Who may do what on a secured cluster: one Kafka principal per role, and its ACLs.

Each role runstate's processes play gets its own principal (``User:<role>``) and only the
operations that role needs, so a leaked agent password cannot read the changelog and a
compromised archiver cannot write events. ``admin`` (topic creation, ACLs) is a super user
of the broker and has no ACLs here. docs/security.md explains each grant.

Group and transactional-id names follow the topic prefix: the processor's group is
``<prefix>-runs`` and its transactional ids ``<prefix>-runs-<worker>``; archivers use
``<prefix>-archiver-*``; reactors (agent side) must use group ids starting with
``<prefix>-reactor`` on a secured cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from runstate.errors import BrokerError
from runstate.streams.topics import TopicNames

__all__ = ["ACL_FILTER_ALL", "ROLES", "Grant", "acl_bindings", "apply_grants", "grants"]

Role = Literal["agent", "processor", "archiver", "replay", "console"]

#: The roles that get a principal of their own, in the order docs list them.
ROLES: Final[tuple[Role, ...]] = ("agent", "processor", "archiver", "replay", "console")


@dataclass(frozen=True, slots=True)
class Grant:
    """One allowed operation of a role on a resource (a Kafka ACL, pattern and all)."""

    role: Role
    resource: Literal["topic", "group", "transactional_id", "cluster"]
    name: str
    operation: str  # READ, WRITE, DESCRIBE, DELETE, DESCRIBE_CONFIGS, IDEMPOTENT_WRITE
    prefixed: bool = False

    @property
    def principal(self) -> str:
        return f"User:{self.role}"


def _topic(role: Role, name: str, *operations: str) -> list[Grant]:
    return [Grant(role, "topic", name, op) for op in operations]


def grants(names: TopicNames) -> list[Grant]:
    """Every grant of every role, for the topics of ``names``."""
    rw = ("READ", "WRITE", "DESCRIBE")
    group = names.runtime_group
    return [
        # agent: writes events (and the schemas they use), reads state changes (reactors)
        *_topic("agent", names.events, "WRITE", "DESCRIBE"),
        *_topic("agent", names.schemas, *rw),
        *_topic("agent", names.state_changes, "READ", "DESCRIBE"),
        Grant("agent", "group", f"{names.prefix}-reactor", "READ", prefixed=True),
        Grant("agent", "cluster", "kafka-cluster", "IDEMPOTENT_WRITE"),
        # agent: makes and reads the wrapped data keys of the subjects it seals for
        *_topic("agent", names.data_keys, *rw),
        # processor (its query API and operator endpoints open and seal personal fields),
        # replay and console read wrapped keys; only admin (`runstate erase`) erases them.
        # The processor checks the settings of every topic at start-up, these two included.
        *_topic("processor", names.data_keys, "READ", "DESCRIBE", "DESCRIBE_CONFIGS"),
        *_topic("processor", names.erasures, "DESCRIBE", "DESCRIBE_CONFIGS"),
        *(
            g
            for role in ("replay", "console")
            for g in _topic(role, names.data_keys, "READ", "DESCRIBE")
        ),
        # processor: reads events, owns the changelog and every derived topic, transactions;
        # checks every topic's settings at start-up (DESCRIBE_CONFIGS), creates none
        *_topic("processor", names.events, "READ", "DESCRIBE", "DESCRIBE_CONFIGS"),
        *(
            g
            for topic in (
                names.runs_changelog,
                names.latest_state,
                names.state_changes,
                names.dead_letters,
                names.schemas,
            )
            for g in _topic("processor", topic, *rw, "DESCRIBE_CONFIGS")
        ),
        Grant("processor", "group", group, "READ"),
        Grant("processor", "group", group, "DESCRIBE"),
        Grant("processor", "transactional_id", f"{group}-", "WRITE", prefixed=True),
        Grant("processor", "transactional_id", f"{group}-", "DESCRIBE", prefixed=True),
        Grant("processor", "cluster", "kafka-cluster", "IDEMPOTENT_WRITE"),
        # archiver: reads what it archives, trims what is archived; writes nothing
        *(
            g
            for topic in (names.events, names.state_changes)
            for g in _topic("archiver", topic, "READ", "DESCRIBE", "DESCRIBE_CONFIGS", "DELETE")
        ),
        *_topic("archiver", names.schemas, "READ", "DESCRIBE"),
        Grant("archiver", "group", f"{names.prefix}-archiver", "READ", prefixed=True),
        Grant("archiver", "group", f"{names.prefix}-archiver", "DESCRIBE", prefixed=True),
        # replay: reads history and the live summaries it compares with
        *(
            g
            for topic in (names.events, names.state_changes, names.latest_state, names.schemas)
            for g in _topic("replay", topic, "READ", "DESCRIBE")
        ),
        # console: reads summaries and dead letters, writes decisions as events
        *(
            g
            for topic in (names.latest_state, names.dead_letters, names.schemas)
            for g in _topic("console", topic, "READ", "DESCRIBE")
        ),
        *_topic("console", names.events, "WRITE", "DESCRIBE"),
        Grant("console", "cluster", "kafka-cluster", "IDEMPOTENT_WRITE"),
    ]


def acl_bindings(grants_: Iterable[Grant]) -> list[AclBinding]:
    """confluent-kafka ``AclBinding`` objects for ``grants_`` (allow, any host)."""

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }
    return [
        AclBinding(
            kinds[g.resource],
            g.name,
            ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
            g.principal,
            "*",
            AclOperation[g.operation],
            AclPermissionType.ALLOW,
        )
        for g in grants_
    ]


#: Matches every ACL of the cluster (describe_acls).
ACL_FILTER_ALL: Final = AclBindingFilter(
    ResourceType.ANY,
    None,  # type: ignore[arg-type]  # None matches any name, principal and host
    ResourcePatternType.ANY,
    None,  # type: ignore[arg-type]
    None,  # type: ignore[arg-type]
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def apply_grants(admin: AdminClient, names: TopicNames, *, timeout_s: float = 30.0) -> int:
    """Create every role's ACLs for ``names`` (safe to repeat) and wait until the broker
    applies them: the authorizer reads them from the metadata log a moment later, and a
    client started before that would be refused.

    Returns:
        How many ACLs the roles have.

    Raises:
        BrokerError: the broker refused (``admin`` is not allowed to alter ACLs, or no
            authorizer is configured), or did not apply them within ``timeout_s``.
    """
    bindings = acl_bindings(grants(names))
    wanted = {str(b) for b in bindings}
    try:
        for future in admin.create_acls(bindings, request_timeout=timeout_s).values():
            future.result()
        deadline = time.monotonic() + timeout_s
        while True:
            described = admin.describe_acls(ACL_FILTER_ALL, request_timeout=timeout_s).result()
            if wanted <= {str(b) for b in described}:
                return len(bindings)
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker did not apply the role ACLs within {timeout_s:.0f} s"
                )
            time.sleep(0.2)
    except KafkaException as exc:
        raise BrokerError(f"could not create the role ACLs: {exc.args[0]}") from exc
