"""The deployment under check: its settings, and the synthetic run's records in its topics.

Every place the checks read is read from the end offsets noted just before the synthetic run
started, so a check looks at the few records written while it ran, never at a production
topic's whole history (the retention policy's archive is the exception: it is searched
through its manifests' run ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from runstate.agents.client import HttpRunStateReader
from runstate.errors import QueryError
from runstate.retention.backends import ArchiveStore
from runstate.retention.context import RetentionContext
from runstate.retention.policy import RetentionPolicy, TopicPolicy
from runstate.runs.state import RunState
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.reader import RawRecord, end_offsets, read_topic
from runstate.streams.topics import TopicNames

__all__ = ["CheckedDeployment", "LaunchCheckConfig"]


@dataclass(frozen=True)
class LaunchCheckConfig:
    """What ``runstate check`` checks, and how.

    Attributes:
        bootstrap_servers: Kafka of the deployment.
        names: Its topics (from the topic prefix).
        query_url: A processor worker's query API.
        policy: The retention policy (personal-data tags, archive); None: no policy.
        log_files: Extra files to search for personal data (worker or agent logs).
        runs_per_day: Workload for the volume estimate.
        events_per_run: Likewise; None uses the synthetic run's own event count.
        replication_factor: Kafka copies, for the estimate.
        visibility_limit_s: How soon a waiting approval must be visible (the article: 10 s).
        archive_wait_s: How long to wait for the archiver to archive the synthetic run.
        archive_scope: Which archive segments check 4 decodes and searches: ``run``, those
            holding the synthetic run; ``all``, every live segment (reads the whole archive).
        agent_timeout_s: Longest an agent process may take for one start or resume.
    """

    bootstrap_servers: str
    names: TopicNames
    query_url: str
    policy: RetentionPolicy | None = None
    log_files: tuple[Path, ...] = ()
    runs_per_day: float = 1000.0
    events_per_run: float | None = None
    replication_factor: int = 1
    visibility_limit_s: float = 10.0
    archive_wait_s: float = 30.0
    archive_scope: Literal["run", "all"] = "run"
    agent_timeout_s: float = 60.0


@dataclass
class CheckedDeployment:
    """The deployment a check runs against, with the offsets where the check began."""

    config: LaunchCheckConfig
    starts: dict[str, dict[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        policy = self.config.policy or RetentionPolicy(topics={})
        self.context = RetentionContext(policy, self.config.names, self.config.bootstrap_servers)
        self._codec: SingleObjectCodec | None = None

    @property
    def names(self) -> TopicNames:
        return self.config.names

    @property
    def bootstrap(self) -> str:
        return self.config.bootstrap_servers

    @property
    def codec(self) -> SingleObjectCodec:
        """Decodes events, looking up unknown writer schemas on the schemas topic."""
        if self._codec is None:
            self._codec = self.context.event_codec()
        return self._codec

    def topic_policy(self, topic: str) -> TopicPolicy | None:
        """The policy of ``topic``, or None when the policy does not name it."""
        return self.context.policy.topics.get(topic)

    def archive(self, topic: str) -> ArchiveStore | None:
        """The archive of ``topic``, or None when the policy does not archive it."""
        rules = self.topic_policy(topic)
        return self.context.store(topic) if rules is not None and rules.archived else None

    def kafka_places(self) -> dict[str, str]:
        """The topics that hold a run's data: label -> topic name."""
        n = self.names
        return {
            "events topic": n.events,
            "state-changes topic": n.state_changes,
            "latest-state topic": n.latest_state,
            "changelog topic": n.runs_changelog,
            "dead-letters topic": n.dead_letters,
        }

    def note_starts(self) -> None:
        """Remember where every place ends now; later reads start there.

        Raises:
            KafkaException: Kafka is unreachable or a topic is missing.
        """
        for topic in self.kafka_places().values():
            self.starts[topic] = {
                p: high for p, (_low, high) in end_offsets(self.bootstrap, topic).items()
            }

    def run_records(self, topic: str, run_id: str) -> list[RawRecord]:
        """The records of ``topic`` keyed by ``run_id`` written since :meth:`note_starts`."""
        key = run_id.encode()
        start = self.starts.get(topic)
        return [
            r
            for r in read_topic(self.bootstrap, topic, start=start)
            if r.key is not None and key in r.key
        ]

    def run_events(self, run_id: str) -> list[tuple[int, AgentEvent]]:
        """The run's events (offset, event) in log order, from the events topic."""
        out = []
        for r in self.run_records(self.names.events, run_id):
            if r.value is not None and r.key == run_id.encode():
                event = decode_event(
                    r.value, codec=self.codec, topic=r.topic, partition=r.partition, offset=r.offset
                )
                out.append((r.offset, event))
        return out

    def reader(self) -> HttpRunStateReader:
        """Reads run states through the query API, waiting for what was written."""
        return HttpRunStateReader(
            self.config.query_url, bootstrap_servers=self.bootstrap, events_topic=self.names.events
        )

    def state(self, run_id: str) -> RunState:
        """The processor's state of ``run_id`` with every event written so far applied.

        Raises:
            QueryError: the run is unknown or the worker did not catch up in time.
        """
        reader = self.reader()
        state = reader.read(run_id, after=reader.latest_position(run_id))
        if state is None:
            raise QueryError(f"the processor does not know run {run_id!r}")
        return state
