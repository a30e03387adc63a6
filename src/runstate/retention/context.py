"""What every retention command shares: the policy, the deployment's topics, their stores.

The archiver, ``retention plan/apply``, replay and ``estimate`` all start from the same three
facts (which policy, which topic prefix, which broker); bundling them keeps each command's
wiring to one line and makes "which store holds topic X" a single, tested answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runstate.errors import PolicyError
from runstate.retention.backends import ArchiveStore
from runstate.retention.policy import RetentionPolicy, TopicPolicy, load_policy, open_store
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.settings import load_settings
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import TopicNames

__all__ = ["TOPIC_KINDS", "RetentionContext", "load_context"]

#: Short names the CLI accepts for ``--topic``, and the :class:`TopicNames` attribute each
#: one means; a full topic name is accepted too.
TOPIC_KINDS = {"events": "events", "state-changes": "state_changes"}


@dataclass(frozen=True)
class RetentionContext:
    """One deployment's retention settings.

    Args:
        policy: The validated retention policy.
        names: Topic names of the deployment (from its prefix).
        bootstrap_servers: Kafka bootstrap servers.
        max_event_bytes: The processor's size limit (replay sets larger records aside).
    """

    policy: RetentionPolicy
    names: TopicNames
    bootstrap_servers: str
    max_event_bytes: int = 256 * 1024
    _stores: dict[str, ArchiveStore] = field(default_factory=dict, compare=False, repr=False)

    def resolve(self, topic: str) -> str:
        """The full topic name for ``events``, ``state-changes`` or a full name."""
        attribute = TOPIC_KINDS.get(topic)
        return str(getattr(self.names, attribute)) if attribute else topic

    def topic_policy(self, topic: str) -> TopicPolicy:
        """The policy of ``topic`` (short or full name).

        Raises:
            PolicyError: the policy does not mention the topic.
        """
        return self.policy.topic(self.resolve(topic))

    def store(self, topic: str) -> ArchiveStore:
        """The archive of ``topic`` (one store object per topic, reused).

        Raises:
            PolicyError: the topic has no policy or is not archived by it.
        """
        full = self.resolve(topic)
        rules = self.policy.topic(full)
        if not rules.archived or rules.archive is None:
            raise PolicyError(
                f"topic {full!r} is not archived by the policy; add an 'archive' section with"
                " a target under topics." + full
            )
        if full not in self._stores:
            self._stores[full] = open_store(rules.archive)
        return self._stores[full]

    def hold_store(self, topic: str) -> ArchiveStore:
        """Where ``topic`` keeps held runs' records: its archive, else its ``hold_archive``.

        Raises:
            PolicyError: the topic has no policy, or neither an archive nor a hold archive.
        """
        full = self.resolve(topic)
        rules = self.policy.topic(full)
        if rules.archived or rules.hold_archive is None:
            return self.store(full)
        key = f"hold:{full}"
        if key not in self._stores:
            self._stores[key] = open_store(rules.hold_archive)
        return self._stores[key]

    def archived_topics(self) -> list[str]:
        """Topics the policy archives, in policy order."""
        return [name for name, rules in self.policy.topics.items() if rules.archived]

    def event_codec(self) -> SingleObjectCodec:
        """A codec over the shipped catalog that finds unknown writers on the schemas topic.

        Archives outlive code versions: a segment may hold values written by a producer newer
        than this runstate, whose schema only the schemas topic still knows.
        """
        return SingleObjectCodec(
            default_catalog(),
            writer_source=SchemaTopicSource(self.bootstrap_servers, self.names.schemas),
        )


def load_context(
    policy_path: Path | str,
    *,
    bootstrap_servers: str | None = None,
    topic_prefix: str | None = None,
) -> RetentionContext:
    """The context for a policy file; unset options come from ``RUNSTATE_*`` settings.

    Raises:
        PolicyError: the policy file cannot be read or is invalid.
        ConfigError: a ``RUNSTATE_*`` setting is invalid.
    """
    settings = load_settings()
    return RetentionContext(
        policy=load_policy(policy_path),
        names=TopicNames(topic_prefix or settings.topic_prefix),
        bootstrap_servers=bootstrap_servers or settings.bootstrap_servers,
        max_event_bytes=settings.max_event_bytes,
    )
