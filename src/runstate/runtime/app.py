"""Assembles one runtime worker from its config: clients, store, task, checkpoint, restore."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from runstate.runs.intake import CachedWriterSource
from runstate.runs.state_codec import StateCodec
from runstate.runtime.checkpoint import Checkpoint
from runstate.runtime.clients import consumer_settings, producer_settings
from runstate.runtime.config import RuntimeConfig
from runstate.runtime.expiries import ApprovalExpiries
from runstate.runtime.fault_hooks import CrashPoints
from runstate.runtime.loop import Worker
from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.restore_simple import ChangelogReplay, PartitionRestorer
from runstate.runtime.run_task import RunTask, WholeStateTable
from runstate.runtime.store import Store
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import admin_client, ensure_topics, topic_specs

__all__ = ["build_worker", "ensure_runtime_topics"]


def ensure_runtime_topics(config: RuntimeConfig) -> None:
    """Create the deployment's topics (the runtime's changelog among them) if missing.

    Raises:
        TopicMismatch: an existing topic has another partition count or cleanup policy.
    """
    ensure_topics(
        admin_client(config.bootstrap_servers),
        topic_specs(config.names, partitions=config.partitions),
        replication_factor=config.replication_factor,
    )


def build_worker(
    config: RuntimeConfig, *, store: Store | None = None, restore: PartitionRestorer | None = None
) -> Worker:
    """A worker ready to :meth:`~runstate.runtime.loop.Worker.run`.

    ``store`` defaults to memory (every partition is restored from the changelog when
    assigned) until the RocksDB store lands; ``restore`` to :class:`ChangelogReplay`.

    Raises:
        ConfigError: ``crash_at`` names an unknown crash point.
    """
    names = config.names
    codec = SingleObjectCodec(
        default_catalog(),
        writer_source=CachedWriterSource(
            SchemaTopicSource(config.bootstrap_servers, names.schemas)
        ),
    )

    def decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
        return decode_event(data, codec=codec, topic=topic, partition=partition, offset=offset)

    state_codec = StateCodec(codec)
    consumer = Consumer(consumer_settings(config))
    producer = Producer(
        producer_settings(
            config.bootstrap_servers,
            transactional_id=config.transactional_id if config.exactly_once else None,
            transaction_timeout_ms=config.transaction_timeout_ms,
            client_id=config.worker_id,
        )
    )
    checkpoint = Checkpoint(
        producer,
        consumer,
        source_topic=names.events,
        changelog_topic=names.runs_changelog,
        exactly_once=config.exactly_once,
        interval_s=config.commit_interval_s,
        timeout_s=config.broker_timeout_s,
        crash_points=CrashPoints(config.crash_at),
    )
    expiries = ApprovalExpiries(
        names=names,
        worker_id=config.worker_id,
        interval_s=config.deadline_interval_s,
        resend_s=config.expiry_resend_s,
    )
    task = RunTask(
        table=WholeStateTable(state_codec),
        codec=state_codec,
        decode=decode,
        names=names,
        worker_id=config.worker_id,
        max_event_bytes=config.max_event_bytes,
        cache_size=config.decoded_state_cache,
        on_state=expiries.observe,
    )
    return Worker(
        config,
        consumer=consumer,
        checkpoint=checkpoint,
        task=task,
        store=store or MemoryStore(),
        restore=restore
        or ChangelogReplay(
            config.bootstrap_servers, names.runs_changelog, timeout_s=config.broker_timeout_s
        ),
        expiries=expiries,
    )
