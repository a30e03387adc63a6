"""Assembles one runtime worker from its config: clients, store, task, checkpoint, restore,
approval expiries and the query API."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from runstate.crypto import cipher_from_settings
from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.identity import FileDirectory
from runstate.runs.intake import CachedWriterSource
from runstate.runs.state_codec import StateCodec
from runstate.runs.summary import SummaryCodec
from runstate.runtime.checkpoint import Checkpoint
from runstate.runtime.clients import (
    TransactionalProducer,
    consumer_settings,
    producer_settings,
)
from runstate.runtime.collector import LoopCollector
from runstate.runtime.config import RuntimeConfig
from runstate.runtime.eviction import FinishedRunEviction
from runstate.runtime.expiries import ApprovalExpiries
from runstate.runtime.fault_hooks import CrashPoints
from runstate.runtime.health_board import StatusBoard
from runstate.runtime.health_supervisor import HealthSupervisor
from runstate.runtime.loop import Worker
from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.operator_api import CommandRoutes, auth_mode
from runstate.runtime.owners import GroupOwners, kafka_describe
from runstate.runtime.query_api import QueryServer
from runstate.runtime.recovery import (
    AssignedRestore,
    ChangelogRestorer,
    KafkaHighWatermarks,
    PartitionRestorer,
    changelog_consumer,
)
from runstate.runtime.rocksdb_store import RocksDBOptions, RocksDBStore
from runstate.runtime.run_task import LayoutTable, RunTask
from runstate.runtime.standby import Standbys
from runstate.runtime.store import Store
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.settings import load_settings
from runstate.streams import clients
from runstate.streams.producer import EventProducer
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import ensure_topics, topic_specs

__all__ = ["RuntimeWorker", "build_worker", "ensure_runtime_topics"]

log = logging.getLogger(__name__)

#: The data-keys topic's mirror in the data dir (beside the ``partition-<n>`` stores).
KEY_MIRROR_DIR = "data-keys"
#: Longest wait of one standby tick on a broker that does not answer (the loop waits).
STANDBY_STALL_S = 5.0
#: Beyond ``transaction_timeout_ms``: the broker's abort check runs every 10 s.
UNDECIDED_MARGIN_S = 15.0


def ensure_runtime_topics(config: RuntimeConfig) -> None:
    """Create the deployment's topics (the runtime's changelog among them) if missing.

    Raises:
        TopicMismatch: an existing topic has a setting a promise depends on set wrong
            (`runstate topics ensure` lists them and ``--fix`` repairs the configs).
    """
    report = ensure_topics(
        clients.admin_client(config.bootstrap_servers),
        topic_specs(config.names, partitions=config.partitions),
        replication_factor=config.replication_factor,
    )
    for line in report.warnings:
        log.warning("%s", line)


@dataclass
class RuntimeWorker:
    """A worker, the query API that serves its state (None with ``web_port=0``) and the
    process answering ``/health`` on the health port (None when it is 0)."""

    worker: Worker
    queries: QueryServer | None
    #: The query API's key store (a mirror of the data-keys topic in the data dir), kept
    #: caught up in a thread of its own while the worker runs.
    key_store: KafkaKeyStore | None = None
    health: HealthSupervisor | None = None

    def run(self) -> None:
        """Serve queries and process until :meth:`stop`; see :meth:`Worker.run`.

        Raises:
            QueryError: the query API's port cannot be bound.
            Fenced: another instance took over.
            CheckpointFailed: at-least-once outputs were not delivered.
        """
        if self.key_store is not None:
            self.key_store.follow()
        if self.health is not None:
            self.health.start()
        try:
            if self.queries is not None:
                self.queries.start()
            try:
                self.worker.run()
            finally:
                if self.queries is not None:
                    self.queries.stop()
                if self.key_store is not None:
                    self.key_store.close()
        finally:
            if self.health is not None:
                self.health.stop()

    def stop(self) -> None:
        """Ask the worker to finish (safe from a signal handler)."""
        self.worker.stop()


def _store(config: RuntimeConfig) -> Store:
    if config.store == "memory":
        return MemoryStore()
    return RocksDBStore(
        config.data_dir,
        options=RocksDBOptions(
            block_cache_bytes=config.block_cache_bytes,
            wal=config.store_wal,
            min_free_bytes=config.store_min_free_bytes,
        ),
    )


def build_worker(
    config: RuntimeConfig, *, store: Store | None = None, restore: PartitionRestorer | None = None
) -> RuntimeWorker:
    """A worker ready to run, with its query API.

    ``store`` defaults to RocksDB under ``data_dir`` (or memory, per ``config.store``);
    ``restore`` to a read_committed :class:`ChangelogRestorer` of the runtime's changelog.

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
    consumer = clients.consumer(consumer_settings(config))

    def producer() -> TransactionalProducer:
        return clients.producer(
            producer_settings(
                config.bootstrap_servers,
                transactional_id=config.transactional_id if config.exactly_once else None,
                transaction_timeout_ms=config.transaction_timeout_ms,
                client_id=config.worker_id,
            )
        )

    checkpoint = Checkpoint(
        producer(),
        consumer,
        source_topic=names.events,
        changelog_topic=names.runs_changelog,
        exactly_once=config.exactly_once,
        interval_s=config.commit_interval_s,
        max_records=config.checkpoint_max_records,
        timeout_s=config.broker_timeout_s,
        outage_s=config.broker_outage_s,
        producer_factory=producer,
        crash_points=CrashPoints(config.crash_at),
    )
    task = RunTask(
        table=LayoutTable(),
        codec=state_codec,
        summaries=SummaryCodec(codec),
        decode=decode,
        names=names,
        worker_id=config.worker_id,
        max_event_bytes=config.max_event_bytes,
        cache_size=config.decoded_state_cache,
        journal=config.journal,
    )
    if restore is None:
        restore = AssignedRestore(
            ChangelogRestorer(
                changelog_consumer(config.bootstrap_servers),
                names.runs_changelog,
                stall_timeout_s=config.broker_timeout_s,
            ),
            high_marks=KafkaHighWatermarks(
                config.bootstrap_servers, timeout_s=config.broker_timeout_s
            ),
            # the broker aborts a transaction left open this long (checked every 10 s)
            undecided_wait_s=config.transaction_timeout_ms / 1000 + UNDECIDED_MARGIN_S,
        )
    store = store or _store(config)
    owners = None
    if config.web_port or config.standby_replicas:
        owners = GroupOwners(
            kafka_describe(config.bootstrap_servers, config.group_id, names.events)
        )
    standbys = None
    if owners is not None and config.standby_replicas:
        standbys = Standbys(
            store,
            ChangelogRestorer(
                changelog_consumer(config.bootstrap_servers),
                names.runs_changelog,
                # ticks run on the loop's thread: a broker that does not answer may cost
                # one tick this long per standby partition, not broker_timeout_s
                stall_timeout_s=min(config.broker_timeout_s, STANDBY_STALL_S),
            ),
            owners.members,
            worker_id=config.worker_id,
            replicas=config.standby_replicas,
            interval_s=config.standby_interval_s,
            max_records=config.standby_tick_records,
        )
    worker = Worker(
        config,
        consumer=consumer,
        checkpoint=checkpoint,
        task=task,
        store=store,
        restore=restore,
        collector=LoopCollector(),
        expiries=ApprovalExpiries(
            checkpoint.committed_store,
            names=names,
            worker_id=config.worker_id,
            interval_s=config.deadline_interval_s,
            resend_s=config.expiry_resend_s,
        ),
        eviction=FinishedRunEviction(
            names=names,
            hot_for_s=config.finished_hot_s,
            forget=task.forget_runs,
            interval_s=config.eviction_interval_s,
        ),
        standbys=standbys,
        consumer_factory=lambda: clients.consumer(consumer_settings(config)),
    )
    queries = None
    key_store = None
    if config.web_port and owners is not None:
        access = _api_access(config)
        queries = QueryServer(
            worker,
            owners,
            host=config.web_host,
            port=config.web_port,
            url=config.url,
            default_timeout_s=config.query_timeout_s,
            **access,
        )
        worker.on_commit(queries.committed)
        worker.commit_for_reads(queries.waiting)
        cipher = access["cipher"]
        if cipher is not None and isinstance(cipher.store, KafkaKeyStore):
            key_store = cipher.store
    return RuntimeWorker(worker, queries, key_store, _health(config, worker))


def _health(config: RuntimeConfig, worker: Worker) -> HealthSupervisor | None:
    """The health process's supervisor; the loop's polls write the heartbeat and status."""
    port = config.health_listen_port
    if not port:
        return None
    supervisor = HealthSupervisor(
        StatusBoard(),
        worker.status,
        host=config.web_host,
        port=port,
        stall_s=config.health_stall_s,
    )
    worker.on_poll(supervisor.polled)
    return supervisor


def _api_access(config: RuntimeConfig) -> dict[str, Any]:
    """Who may use the query API (the identity file, or development mode, said loudly) and
    the producer its decision and operator endpoints send with.

    Raises:
        ConfigError: the identity file is invalid, or the API would be open beyond loopback.
    """
    s = load_settings()
    directory = None if s.auth_file is None else FileDirectory.load(s.auth_file)
    auth_mode(directory, host=config.web_host, dev=s.auth_dev)
    # With a master key the API opens personal fields for principals allowed to see them and
    # seals the comments and reasons of the decisions it sends.
    cipher = cipher_from_settings(
        s,
        bootstrap_servers=config.bootstrap_servers,
        topic_prefix=config.topic_prefix,
        mirror_dir=config.data_dir / KEY_MIRROR_DIR,
    )
    producer = EventProducer(
        s,
        bootstrap_servers=config.bootstrap_servers,
        topic_prefix=config.topic_prefix,
        producer_name=f"runstate-api-{config.worker_id}",
        sealer=cipher,
    )
    return {
        "directory": directory,
        "cipher": cipher,
        "commands": CommandRoutes(producer, config.url, timeout_s=config.query_timeout_s * 2),
    }
