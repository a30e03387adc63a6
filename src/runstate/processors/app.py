"""The run-state processor on faust: the agent, the ``runs`` table, the timer, the query API.

Everything that knows faust lives here; what happens to a record is in
:mod:`runstate.processors.worker`, which sees the table and the topics through protocols.

faust settings that matter, and why:

* ``processing_guarantee="at_least_once"``: faust's exactly-once mode is not reliable, so
  idempotency is ours (see :mod:`runstate.processors.worker`).
* Topics and the table use the ``raw`` serializer: records are decoded by our code, and the
  table holds the state codec's Avro bytes untouched (faust's default would wrap them in
  JSON, and a decode failure inside faust silently skips the record).
* ``stream_ack_exceptions=False`` and a crash on infrastructure errors: a record whose
  outputs could not be delivered must be redelivered, not acknowledged.
* RocksDB is sized per partition database (``rocksdb_options``): faust's defaults reserve a
  2 GiB block cache for each.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP

from runstate.processors.batch_loop import BatchLoop
from runstate.processors.commit_marks import CommitMarks
from runstate.processors.config import ProcessorConfig
from runstate.processors.consumer_offsets import ConsumerOffsets
from runstate.processors.fault_hooks import install_fault_hooks
from runstate.processors.faust_adapters import (
    ChangelogConfirmingTable,
    FaustOutputs,
    FaustRunTable,
    RunStateApp,
    raw_topic,
)
from runstate.processors.fencing import (
    EXIT_FENCED,
    BatchFence,
    StallWatchdog,
    halt,
)
from runstate.processors.metrics import ProcessorMetrics
from runstate.processors.progress import ProcessedOffsets
from runstate.processors.query_api import QueryServer
from runstate.processors.recovery import RestoreWatch
from runstate.processors.worker import RunProcessor
from runstate.runs.deadlines import DeadlineIndex, expiry_event, utc_now
from runstate.runs.intake import CachedWriterSource
from runstate.runs.state import RunState
from runstate.runs.state_codec import StateCodec
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.group_offsets import GroupOffsets
from runstate.streams.partitioning import partition_for
from runstate.streams.schema_topic import SchemaTopicSource

__all__ = ["ProcessorApp", "build_processor"]

log = logging.getLogger(__name__)


@dataclass
class ProcessorApp:
    """One worker: the faust app and the parts the query API and tests look at."""

    config: ProcessorConfig
    app: faust.App
    table: Any
    events_topic: Any
    processor: RunProcessor
    codec: StateCodec
    deadlines: DeadlineIndex
    restore: RestoreWatch
    stats: ProcessorMetrics
    progress: ProcessedOffsets
    batch_loop: BatchLoop | None = field(default=None)
    consumer_offsets: ConsumerOffsets | None = field(default=None)
    _scanned: tuple[int, frozenset[int]] | None = field(default=None)

    # -- RunDirectory (for the query API) ---------------------------------------------------
    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def partitions(self) -> int:
        return self.config.partitions

    @property
    def default_timeout_s(self) -> float:
        return self.config.query_timeout_s

    def ready(self) -> bool:
        """Assigned, restored and not rebalancing: the table can be trusted."""
        a = self.app
        recovery: Any = getattr(a.tables, "recovery", None)
        return bool(
            not a.rebalancing
            and not a.in_recovery
            and recovery is not None
            and recovery.completed.is_set()
        )

    def owned_partitions(self) -> list[int]:
        if not self.ready():
            return []
        topic = self.config.names.events
        return sorted(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
        )

    def owns(self, partition: int) -> bool:
        return partition in self.owned_partitions()

    def owner_url(self, partition: int) -> str | None:
        changelog = self.config.names.changelog
        for url, topics in self.app.assignor.tables_metadata().items():
            if partition in topics.get(changelog, ()):
                return str(url)
        return None

    def member_urls(self) -> list[str]:
        return sorted(str(u) for u in self.app.assignor.tables_metadata())

    def read(self, run_id: str) -> RunState | None:
        raw = self.table.get(run_id.encode())
        return None if raw is None else self.codec.decode_state(raw)

    def local_runs(self) -> list[RunState]:
        if not self.ready():
            return []
        return [self.codec.decode_state(v) for v in self.table.values()]

    def processed_through(self, partition: int) -> int | None:
        done = self.progress.get(partition)
        mark = self.batch_loop.marks.get(partition) if self.batch_loop else None
        if mark is None:  # no batch since the assignment: faust's offsets are still the broker's
            mark = self._committed(partition)
        if mark is not None and (done is None or mark - 1 > done):
            return mark - 1
        return done

    async def wait_processed(self, partition: int, offset: int, timeout_s: float) -> bool:
        return await self.progress.wait_for(partition, offset, timeout_s)

    def health(self) -> dict[str, Any]:
        standbys = sorted(
            tp.partition
            for tp in self.app.assignor.assigned_standbys()
            if tp.topic == self.config.names.changelog
        )
        return {
            "status": "ok" if self.ready() else "starting",
            "worker_id": self.worker_id,
            "url": self.url,
            "ready": self.ready(),
            "active_partitions": self.owned_partitions(),
            "standby_partitions": standbys,
            "members": self.member_urls(),
        }

    def metrics(self) -> dict[str, Any]:
        return {
            **self.stats.snapshot(),
            "processed_offsets": {str(k): v for k, v in self.progress.snapshot().items()},
            "commit_marks": self._commit_marks(),
            "pending_deadlines": len(self.deadlines),
            "restore": self.restore.snapshot(),
        }

    def _commit_marks(self) -> dict[str, Any]:
        loop, offsets = self.batch_loop, self.consumer_offsets
        if loop is None or offsets is None:
            return {}
        return {
            "next_offsets": {str(k): v for k, v in loop.marks.snapshot().items()},
            "capped_commits": offsets.capped_commits,
            "seeks_back": loop.rewinds_total,
        }

    def _committed(self, partition: int) -> int | None:
        # faust keeps the group's committed offsets once assigned; private, hence defensive.
        offsets = getattr(self.app.consumer, "_committed_offset", None)
        if offsets is None:
            return None
        value = offsets.get(TP(self.config.names.events, partition))
        return int(value) if value is not None else None

    # -- approval deadlines ------------------------------------------------------------------
    async def expire_due_approvals(self) -> int:
        """Produce ApprovalExpired for owned runs past due; returns how many were sent."""
        if not self.ready():
            return 0
        owned = frozenset(self.owned_partitions())
        scan_key = (self.app.consumer_generation_id, owned)
        if self._scanned != scan_key:
            self.deadlines.rebuild(
                (partition_for(k, self.partitions), self.codec.decode_state(v))
                for k, v in self.table.items()
            )
            self._scanned = scan_key
        sent = 0
        now = utc_now()
        for deadline in self.deadlines.due(now, owned=set(owned)):
            event = expiry_event(deadline, now=now, producer=f"runstate-processor/{self.worker_id}")
            await self._send_event(event, deadline.partition)
            self.deadlines.mark_sent(deadline)
            sent += 1
        self.stats.expiries_sent += sent
        return sent

    async def _send_event(self, event: AgentEvent, partition: int) -> None:
        value = encode_event(event)
        fut = await self.events_topic.send(
            key=event.run_id.encode(),
            value=value,
            partition=partition,
            headers=[("rs-event-type", event.event_type.encode())],
        )
        await fut


def build_processor(config: ProcessorConfig) -> ProcessorApp:
    """A configured, not yet started worker (start it with ``faust.Worker``)."""
    names = config.names
    app = RunStateApp(
        config.app_id,
        broker=[f"kafka://{hp.strip()}" for hp in config.bootstrap_servers.split(",")],
        store="rocksdb://",
        datadir=str(config.data_dir),
        autodiscover=False,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication_factor,
        table_standby_replicas=config.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=config.heartbeat_interval_s,
        broker_commit_interval=config.commit_interval_s,
        stream_wait_empty=False,
        stream_ack_exceptions=False,
        producer_acks=-1,
        web_enabled=True,
        web_host=config.web_host,
        web_port=config.web_port,
        canonical_url=config.url,
    )
    events = raw_topic(app, names.events, config.partitions)
    outputs = FaustOutputs(
        state_changes=raw_topic(app, names.state_changes, config.partitions),
        latest_state=raw_topic(app, names.latest_state, config.partitions),
        dead_letters=raw_topic(app, names.dead_letters),
    )
    restore = RestoreWatch()
    table = app.tables.add(
        ChangelogConfirmingTable(
            app,
            name="runs",
            beacon=app.tables.beacon,
            key_type=bytes,
            value_type=bytes,
            partitions=config.partitions,
            store="rocksdb://",
            options=config.rocksdb_options,
            on_changelog_event=restore.on_changelog_event,
            on_recover=restore.on_recovered,
            help="RunState (state_codec Avro bytes) by run_id",
        )
    )
    codec = SingleObjectCodec(
        default_catalog(),
        writer_source=CachedWriterSource(
            SchemaTopicSource(config.bootstrap_servers, names.schemas)
        ),
    )
    state_codec = StateCodec(codec)

    def decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
        return decode_event(data, codec=codec, topic=topic, partition=partition, offset=offset)

    metrics = ProcessorMetrics(config.worker_id)
    restore.metrics = metrics
    progress = ProcessedOffsets()
    deadlines = DeadlineIndex(resend_s=config.expiry_resend_s)
    run_table = FaustRunTable(table)
    processor = RunProcessor(
        table=run_table,
        outputs=outputs,
        codec=state_codec,
        decode=decode,
        max_event_bytes=config.max_event_bytes,
        worker_id=config.worker_id,
        metrics=metrics,
        progress=progress,
        on_state=deadlines.observe,
    )
    worker = ProcessorApp(
        config=config,
        app=app,
        table=table,
        events_topic=events,
        processor=processor,
        codec=state_codec,
        deadlines=deadlines,
        restore=restore,
        stats=metrics,
        progress=progress,
    )

    watchdog = StallWatchdog(threshold_s=config.session_timeout_s * config.stall_fence_share)
    offsets = ConsumerOffsets(
        consumer=app.consumer,
        topic=names.events,
        marks=CommitMarks(),
        lookup=GroupOffsets(config.bootstrap_servers, config.app_id, names.events),
    )
    offsets.install()
    loop = BatchLoop(
        processor=processor,
        table=run_table,
        fence=BatchFence(watchdog, _Assignment(app, names.events)),
        halt=halt,
        restart_when_fenced=config.restart_when_fenced,
        marks=offsets.marks,
        start_offsets=offsets.start_offsets,
        rewind=offsets.rewind,
    )
    worker.consumer_offsets = offsets
    worker.batch_loop = loop

    watching: list[asyncio.Task[None]] = []

    async def apply_events(stream: Any) -> None:
        if not watching:  # from the first batch on; faust starts app tasks later
            watching.append(asyncio.ensure_future(watch_for_stalls()))
        async for batch in stream.take_events(config.batch_max, within=config.batch_within_s):
            await loop.handle(batch)

    app.agent(events, name=f"{config.app_id}-apply-events")(apply_events)

    async def expire_approvals() -> None:
        try:
            await worker.expire_due_approvals()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("approval deadline scan failed; retrying on the next tick")

    app.timer(interval=config.deadline_interval_s)(expire_approvals)

    def stalled(gap: float) -> None:
        halt(
            f"the event loop stalled {gap:.1f} s (limit {watchdog.threshold_s:.1f} s) while"
            " this worker owned partitions: the group may have given them to another worker",
            EXIT_FENCED,
            restart_in_place=config.restart_when_fenced,
        )

    async def watch_for_stalls() -> None:
        await watchdog.run(armed=lambda: bool(worker.owned_partitions()), on_stall=stalled)

    def revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        gone: set[TP] = args[0] if args else kwargs.get("revoked", set())
        progress.forget(tp.partition for tp in gone if tp.topic == names.events)
        loop.forget(tp.partition for tp in gone if tp.topic == names.events)

    def assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        loop.forget()  # faust seeks every assigned partition to its commit

    app.on_partitions_revoked.connect(revoked)
    app.on_partitions_assigned.connect(assigned)
    app.web_server(QueryServer(worker, host=config.web_host, port=config.web_port))
    install_fault_hooks(app, outputs)
    return worker


class _Assignment:
    """The events-topic partitions the consumer holds now (both faust views must agree)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app = app
        self._topic = topic

    def active_partitions(self) -> set[int]:
        consumer: Any = self._app.consumer
        held = {tp.partition for tp in consumer.assignment() if tp.topic == self._topic}
        actives = {
            tp.partition for tp in self._app.assignor.assigned_actives() if tp.topic == self._topic
        }
        return held & actives
