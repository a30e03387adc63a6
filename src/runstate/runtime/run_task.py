"""The run-state task on the runtime: raw event records in, state and outputs out.

For each record of one partition, in offset order: :func:`~runstate.runs.intake.read_record`
turns it into an event or a dead letter; the run's state is loaded through the partition's
transaction (:class:`RunTable`), the pure reducer applied, and

* :class:`~runstate.runs.reducer.Applied`: a ``RunStateChanged`` is produced (state-changes
  topic, keyed by run id, same partition number);
* :class:`~runstate.runs.reducer.Duplicate`: nothing new (the reducer already saw it);
* :class:`~runstate.runs.reducer.Rejected`, undecodable input, or a reducer/codec failure: a
  dead letter with the reason headers, never an exception that stops the partition.

Each event applied to a run, or dead-lettered while its run is in the store (rejected, or a
processing error), also gets one
entry in the run's journal (:mod:`runstate.runs.journal`, keyed by its offset), written at
once through the same transaction: so it is changelogged with the state, and a restore
rebuilds it. ``journal=False`` turns that off (the cost is measured in docs/runtime.md).

At the end of a batch each touched run's state is saved once and its summary produced once
(the compacted latest-state topic, :mod:`runstate.runs.summary`): intermediate states are in
the changes already. The summary, not the whole state: its size and encode cost do not grow
with the run, so a run's 1,000th event costs what its 10th did and a long run's record never
outgrows the broker's ``message.max.bytes``.

Everything goes through a :class:`TaskContext` (the
:class:`~runstate.runtime.checkpoint.Checkpoint`), so it is all inside the interval's Kafka
transaction: a dead letter or change is visible exactly once, or not at all if the
transaction aborts and the record is redone.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runstate.errors import DecodeError
from runstate.runs.dead_letters import DeadLetter, DeadLetterReason, SourceRecord
from runstate.runs.intake import EventDecoder, read_record
from runstate.runs.journal import encode_event_entry, journal_key
from runstate.runs.layout import LayoutCodec, load_run, run_writes
from runstate.runs.reducer import Applied, Duplicate, Outcome, apply
from runstate.runs.state import RunState, RunStateChanged
from runstate.runtime.outputs import TaskContext
from runstate.runtime.store import PartitionTransaction
from runstate.schemas.catalog import default_catalog
from runstate.schemas.events import AgentEvent
from runstate.streams.topics import TopicNames

__all__ = ["ChangeCodec", "LayoutTable", "RunTable", "RunTask", "SummaryEncoder", "TaskCounts"]

log = logging.getLogger(__name__)


class ChangeCodec(Protocol):
    """Avro bytes of changes (:class:`runstate.runs.state_codec.StateCodec`)."""

    def encode_change(self, change: RunStateChanged) -> bytes: ...


class SummaryEncoder(Protocol):
    """Avro bytes of a state's summary (:class:`runstate.runs.summary.SummaryCodec`)."""

    def encode_state_summary(self, state: RunState) -> bytes: ...


class RunTable(Protocol):
    """How a run's state is laid out in the partition store (:class:`LayoutTable`)."""

    def load(self, txn: PartitionTransaction, run_id: str) -> RunState | None:
        """The run's state as this interval sees it (None: no run yet).

        Raises:
            DecodeError: the stored bytes are not a readable state.
        """
        ...

    def save(self, txn: PartitionTransaction, old: RunState | None, new: RunState) -> None:
        """Write ``new``; ``old`` is what :meth:`load` gave, so only the difference is
        written."""
        ...


class LayoutTable:
    """A run as a small head plus one entry per collection item, with its index keys
    (:mod:`runstate.runs.layout`): an event writes what it changed, not the whole run, and
    the indexes the query API and the deadline timer read are written with it."""

    def __init__(self, codec: LayoutCodec | None = None) -> None:
        self._codec = codec or LayoutCodec()

    def load(self, txn: PartitionTransaction, run_id: str) -> RunState | None:
        return load_run(txn, run_id, codec=self._codec)

    def save(self, txn: PartitionTransaction, old: RunState | None, new: RunState) -> None:
        for key, value in run_writes(old, new, codec=self._codec):
            if value is None:
                txn.delete(key)
            else:
                txn.set(key, value)


@dataclass
class TaskCounts:
    """What the task did since it started, for ``/metrics``: plain integers the loop bumps
    (no lock; the metrics thread only reads them). Records redone after an aborted
    checkpoint count again.

    Attributes:
        applied: events the reducer applied (each emitted one ``RunStateChanged``).
        duplicates: events the reducer had seen already (nothing emitted).
        dead_letters: records set aside, by ``(reason, code)``: the ``rs-reason`` header and
            the error class or reject code.
    """

    applied: int = 0
    duplicates: int = 0
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class _Touched:
    partition: int
    old: RunState | None
    new: RunState


class RunTask:
    """Applies events of the events topic to the run table and emits the results."""

    def __init__(
        self,
        *,
        table: RunTable,
        codec: ChangeCodec,
        summaries: SummaryEncoder,
        decode: EventDecoder,
        names: TopicNames,
        worker_id: str,
        max_event_bytes: int,
        cache_size: int = 10_000,
        journal: bool = True,
    ) -> None:
        self._table = table
        self._codec = codec
        self._summaries = summaries
        self._decode = decode
        self._names = names
        self._worker_id = worker_id
        self._max_event_bytes = max_event_bytes
        self._cache = _RecentStates(cache_size)
        self._journal = journal
        self._versions: dict[bytes, int] = {}
        self.counts = TaskCounts()

    def process(self, records: Sequence[SourceRecord], ctx: TaskContext) -> list[str]:
        """Handle records of one partition in order; ``applied``/``duplicate``/``dead_letter``
        each.

        Raises:
            Exception: only for the machine's failures (a store read, the producer fenced),
                never for a bad record; the worker must stop.
        """
        touched: dict[str, _Touched] = {}
        outcomes = [self._one(record, ctx, touched) for record in records]
        for run_id, t in touched.items():
            self._table.save(ctx.transaction(t.partition), t.old, t.new)
            ctx.produce(
                self._names.latest_state,
                run_id.encode(),
                self._summaries.encode_state_summary(t.new),
                partition=t.partition,
            )
            self._cache.remember(run_id, t.partition, t.new)
        return outcomes

    def forget(self, partitions: Collection[int] | None = None) -> None:
        """Drop cached states (all, after an abort; of ``partitions``, when they leave)."""
        self._cache.forget(partitions)

    def forget_runs(self, run_ids: Iterable[str]) -> None:
        """Drop the cached states of runs that left the store (finished runs evicted)."""
        self._cache.forget_runs(run_ids)

    def _one(self, record: SourceRecord, ctx: TaskContext, touched: dict[str, _Touched]) -> str:
        p = record.partition
        item = read_record(record, decode=self._decode, max_event_bytes=self._max_event_bytes)
        if isinstance(item, DeadLetter):
            return self._dead_letter(item, ctx)
        run_id = item.run_id
        try:
            state = self._load(run_id, p, ctx, touched)
        except DecodeError as exc:
            return self._processing_error(record, exc, ctx)
        try:
            outcome: Outcome = apply(state, item, offset=record.offset)
            change = (
                self._codec.encode_change(outcome.change) if isinstance(outcome, Applied) else None
            )
        except Exception as exc:  # a reducer or codec bug must not stop the partition
            log.exception("processing %s[%s]@%s failed", record.topic, p, record.offset)
            if state is not None:
                self._note(record, item, ctx, outcome="error", why=type(exc).__name__)
            return self._processing_error(record, exc, ctx)
        if isinstance(outcome, Applied):
            assert change is not None
            self._note(record, item, ctx)
            ctx.produce(self._names.state_changes, record.key, change, partition=p)
            earlier = touched.get(run_id)
            touched[run_id] = _Touched(p, earlier.old if earlier else state, outcome.state)
            ctx.processed(p, record.offset)
            self.counts.applied += 1
            return "applied"
        if isinstance(outcome, Duplicate):
            ctx.processed(p, record.offset)
            self.counts.duplicates += 1
            return "duplicate"
        if state is not None:
            why = f"{outcome.code.value}: {outcome.reason}"
            self._note(record, item, ctx, outcome="rejected", why=why)
        return self._dead_letter(
            DeadLetter(record, DeadLetterReason.REJECTED, outcome.code.value, outcome.reason), ctx
        )

    def _note(
        self,
        record: SourceRecord,
        event: AgentEvent,
        ctx: TaskContext,
        *,
        outcome: str = "applied",
        why: str = "",
    ) -> None:
        """The event's journal entry, under the run (only for runs the store holds, so
        eviction finds every entry it must remove)."""
        if not self._journal:
            return
        value = encode_event_entry(
            event, schema_version=self._schema_version(record.value), outcome=outcome, why=why
        )
        ctx.transaction(record.partition).set(journal_key(event.run_id, record.offset), value)

    def _schema_version(self, value: bytes | None) -> int:
        """The writer schema's local version, from the single-object fingerprint (0 when
        the schema came from elsewhere, e.g. a newer producer's via the schemas topic)."""
        fingerprint = (value or b"")[2:10]
        version = self._versions.get(fingerprint)
        if version is None:
            known = default_catalog().by_fingerprint(fingerprint)
            version = known.version if known is not None else 0
            if len(self._versions) < 4096:
                self._versions[fingerprint] = version
        return version

    def _load(
        self, run_id: str, partition: int, ctx: TaskContext, touched: dict[str, _Touched]
    ) -> RunState | None:
        if run_id in touched:
            return touched[run_id].new
        cached = self._cache.get(run_id)
        if cached is not None:
            return cached
        return self._table.load(ctx.transaction(partition), run_id)

    def _processing_error(self, record: SourceRecord, exc: Exception, ctx: TaskContext) -> str:
        return self._dead_letter(
            DeadLetter(
                record,
                DeadLetterReason.PROCESSING_ERROR,
                type(exc).__name__,
                f"{type(exc).__name__}: {exc}",
            ),
            ctx,
        )

    def _dead_letter(self, letter: DeadLetter, ctx: TaskContext) -> str:
        src = letter.source
        log.warning(
            "dead letter %s[%s]@%s: %s %s",
            src.topic,
            src.partition,
            src.offset,
            letter.reason.value,
            letter.detail,
        )
        headers: list[tuple[str, str | bytes | None]] = list(
            letter.headers(worker_id=self._worker_id)
        )
        ctx.produce(self._names.dead_letters, src.key, src.value, headers=headers)
        ctx.processed(src.partition, src.offset)
        why = (letter.reason.value, letter.error_class)
        dead = self.counts.dead_letters
        dead[why] = dead.get(why, 0) + 1
        return "dead_letter"


class _RecentStates:
    """Decoded states of recently saved runs, by run id: decoding costs more than applying.

    Entries may hold writes not yet committed, so the owner must :meth:`forget` all of them
    when a transaction aborts, and a partition's when the partition leaves this worker.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[str, tuple[int, RunState]] = OrderedDict()

    def get(self, run_id: str) -> RunState | None:
        entry = self._entries.get(run_id)
        if entry is None:
            return None
        self._entries.move_to_end(run_id)
        return entry[1]

    def remember(self, run_id: str, partition: int, state: RunState) -> None:
        if self._limit <= 0:
            return
        self._entries[run_id] = (partition, state)
        self._entries.move_to_end(run_id)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def forget(self, partitions: Collection[int] | None = None) -> None:
        if partitions is None:
            self._entries.clear()
            return
        gone = set(partitions)
        for run_id in [r for r, (p, _) in self._entries.items() if p in gone]:
            del self._entries[run_id]

    def forget_runs(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self._entries.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._entries)
