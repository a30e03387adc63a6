"""One record in, state and outputs out: the processor's step, free of faust.

:class:`RunProcessor` sees the table and the output topics through small protocols, so the
same code runs inside the faust agent and in unit tests with a dict and a list.

Ordering is what makes at-least-once safe here. For each batch:

1. ``RunStateChanged``, the latest state and any dead letters are sent and their delivery
   *awaited* (one round trip per batch);
2. only then is the table written (RocksDB, and the changelog through faust);
3. the changelog records' delivery is *awaited* (:meth:`RunTable.confirm`) before
   :meth:`RunProcessor.process_batch` returns, and only after it returned may the batch's
   source offsets be acknowledged, hence committed.

So a changelog record for version *v* implies every change up to *v* reached the broker,
and a committed source offset implies the changelog holds its event's effect. (faust's
own flush before a commit is not enough for the latter: it gives up after 0.1 s without
a send and commits anyway; see
:class:`runstate.processors.faust_adapters.ChangelogConfirmingTable`.)
A crash anywhere before step 2 leaves the changelog at *v-1*; the event is redelivered,
re-applied to the same state and yields byte-identical outputs (the reducer is pure), so
consumers deduplicating by ``(run_id, version)`` never see two contents for one version.
A crash after step 2 but before the offset commit redelivers an event the state may
already hold. If the local store kept it (offset at or below ``last_offset``) it is a
:class:`Duplicate`, for which the stored bytes are written again - re-sending the
changelog record in case it was lost with the crash - and the latest state re-sent; no
second ``RunStateChanged`` is made. If restoring from the changelog took the store back
to *v-1*, the event is applied again, as before step 2.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runstate.errors import Error
from runstate.processors.metrics import ProcessorMetrics
from runstate.processors.progress import ProcessedOffsets
from runstate.runs.dead_letters import DeadLetter, DeadLetterReason, SourceRecord
from runstate.runs.intake import EventDecoder, read_record
from runstate.runs.reducer import Applied, Duplicate, Outcome, apply
from runstate.runs.state import RunState, RunStateChanged

__all__ = ["Outputs", "RunProcessor", "RunTable", "StateCodec", "StorageFull", "WriteGuard"]

log = logging.getLogger(__name__)


class StorageFull(Error):
    """The local store has no space left; retry the same batch once space returns."""


def _no_space(exc: BaseException) -> bool:
    # RocksDB reports ENOSPC as a bare Exception whose text says "No space left on device".
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "no space left" in str(exc).lower()
    )


class WriteGuard(Protocol):
    """Asked before a batch writes anything (:class:`runstate.processors.fencing.BatchFence`)."""

    def begin(self) -> int: ...

    def check(self, token: int, partitions: Collection[int], *, before: str) -> set[int]:
        """Partitions whose records must be dropped.

        Raises:
            Fenced: nothing of the batch may be written.
        """
        ...


class RunTable(Protocol):
    """The ``runs`` table as raw bytes by run_id, per partition (faust Table, or a dict)."""

    def get(self, key: bytes, *, partition: int) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, *, partition: int) -> None: ...

    async def confirm(self) -> None:
        """Wait until every ``put`` so far is durable beyond this process (the changelog).

        Raises:
            Exception: a write could not be made durable; the worker must stop.
        """
        ...


class Outputs(Protocol):
    """Where results go. Sending only queues a record; the awaitable it returns resolves on
    delivery."""

    async def send_change(self, partition: int, key: bytes, change: bytes) -> Awaitable[Any]:
        """Queue a RunStateChanged record; the returned awaitable resolves on delivery."""
        ...

    async def send_state(self, partition: int, key: bytes, state: bytes) -> Awaitable[Any]:
        """Queue a latest-state record; the returned awaitable resolves on delivery."""
        ...

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]: ...


class StateCodec(Protocol):
    """Avro bytes of states and changes (``runstate.runs.state_codec``)."""

    def encode_state(self, state: RunState) -> bytes: ...

    def decode_state(self, data: bytes) -> RunState: ...

    def encode_change(self, change: RunStateChanged) -> bytes: ...


#: Called with the partition and new state after each applied event (deadline index).
StateObserver = Callable[[int, RunState], None]


class RunProcessor:
    """Applies events from the events topic to the ``runs`` table and emits the results."""

    def __init__(
        self,
        *,
        table: RunTable,
        outputs: Outputs,
        codec: StateCodec,
        decode: EventDecoder,
        max_event_bytes: int,
        worker_id: str,
        metrics: ProcessorMetrics | None = None,
        progress: ProcessedOffsets | None = None,
        on_state: StateObserver | None = None,
        decoded_state_cache: int = 10_000,
    ) -> None:
        self._table = table
        self._outputs = outputs
        self._codec = codec
        self._decode = decode
        self._max_event_bytes = max_event_bytes
        self._worker_id = worker_id
        self.metrics = metrics or ProcessorMetrics(worker_id)
        self.progress = progress or ProcessedOffsets()
        self._on_state = on_state
        self._states = _DecodedStates(codec.decode_state, limit=decoded_state_cache)

    async def process(self, record: SourceRecord) -> str:
        """Process one record; see :meth:`process_batch`."""
        [outcome] = await self.process_batch([record])
        return outcome

    async def process_batch(
        self, records: Sequence[SourceRecord], *, guard: WriteGuard | None = None
    ) -> list[str]:
        """Process records in order; returns ``applied``/``duplicate``/``dead_letter`` each,
        or ``dropped`` for a record whose partition was revoked before it could be written.

        Outputs of the whole batch are sent, their delivery awaited once, and only then are
        the table writes made (see the module docstring): one broker round trip per batch
        instead of per event. Bad input never raises: it becomes a dead letter. ``guard`` is
        asked before the outputs are sent and again before the table writes; a dropped
        record must not be acknowledged (it was not written).

        Raises:
            Fenced: from ``guard``; nothing of the batch was written after the check.
            StorageFull: the local store has no space left; nothing was acknowledged, and
                processing the same records again is safe (written keys come back as
                duplicates, unwritten ones re-emit byte-identical outputs).
            Exception: only when Kafka or the local store fails (an output could not be
                delivered); the worker must stop so the records are redelivered.
        """
        batch = _Batch()
        self.metrics.batches += 1
        token = guard.begin() if guard is not None else 0
        outcomes = [await self._process(record, batch) for record in records]
        partitions = {r.partition for r in records}
        gone = guard.check(token, partitions, before="outputs") if guard is not None else set()
        for source, send, confirm in batch.sends:
            if source not in gone:
                delivery = await send()
                if confirm:
                    batch.deliveries.append(delivery)
        for key, (source, value, confirm) in batch.latest.items():
            if source not in gone:
                delivery = await self._outputs.send_state(source, key, value)
                if confirm:
                    batch.deliveries.append(delivery)
        if batch.deliveries:
            await asyncio.gather(*batch.deliveries)
        if guard is not None:
            gone |= guard.check(token, partitions - gone, before="table writes")
        if gone:
            log.warning(
                "partitions %s were revoked while a batch was in flight; dropping their"
                " records unwritten (the new owner processes them)",
                sorted(gone),
            )
        try:
            for key, (partition, value) in batch.writes.items():
                if partition not in gone:
                    self._table.put(key, value, partition=partition)
        except Exception as exc:
            if _no_space(exc):
                raise StorageFull(
                    f"the local store is full ({exc}); free space in the data dir, the"
                    " batch is retried meanwhile"
                ) from exc
            raise
        if any(p not in gone for p, _ in batch.writes.values()):
            await self._table.confirm()
        if self._on_state is not None:
            for partition, state in batch.observed:
                if partition not in gone:
                    self._on_state(partition, state)
        for i, record in enumerate(records):
            if record.partition in gone:
                outcomes[i] = "dropped"
                continue
            self.metrics.processed(outcomes[i])
            self.progress.advance(record.partition, record.offset)
        return outcomes

    async def _process(self, record: SourceRecord, batch: _Batch) -> str:
        item = read_record(record, decode=self._decode, max_event_bytes=self._max_event_bytes)
        if isinstance(item, DeadLetter):
            self._dead_letter(item, batch)
            return "dead_letter"
        assert record.key is not None  # read_record checked it
        # A store read fails for the machine's reasons (disk, I/O), not the record's: it must
        # stop the batch (redelivered later), never turn a good event into a dead letter.
        raw = batch.pending.get(record.key)
        if raw is None:
            raw = self._table.get(record.key, partition=record.partition)
        try:
            state = None if raw is None else self._states.get(record.key, raw)
            outcome: Outcome = apply(state, item, offset=record.offset)
            if isinstance(outcome, Applied):
                state_bytes = self._codec.encode_state(outcome.state)
                change_bytes = self._codec.encode_change(outcome.change)
        except Exception as exc:  # a reducer or state-codec bug must not stop the partition
            log.exception("processing %s@%s failed", record.topic, record.offset)
            self._dead_letter(
                DeadLetter(
                    record,
                    DeadLetterReason.PROCESSING_ERROR,
                    type(exc).__name__,
                    f"{type(exc).__name__}: {exc}",
                ),
                batch,
            )
            return "dead_letter"
        p, key = record.partition, record.key
        out = self._outputs
        if isinstance(outcome, Applied):
            batch.send(p, functools.partial(out.send_change, p, key, change_bytes))
            batch.write(p, key, state_bytes, confirm=True)
            batch.observed.append((p, outcome.state))
            self._states.remember(key, state_bytes, outcome.state)
            return "applied"
        if isinstance(outcome, Duplicate):
            self.metrics.duplicates[outcome.why.value] += 1
            if raw is not None:
                # Re-writing the same bytes re-sends the changelog record: if a crash lost
                # it after RocksDB had it, the changelog catches up here. The latest state
                # is re-sent but not awaited (it changes nothing a reader can tell).
                batch.write(p, key, raw, confirm=False)
            return "duplicate"
        self._dead_letter(
            DeadLetter(record, DeadLetterReason.REJECTED, outcome.code.value, outcome.reason),
            batch,
        )
        return "dead_letter"

    def _dead_letter(self, letter: DeadLetter, batch: _Batch) -> None:
        self.metrics.dead_letters[letter.reason.value] += 1
        log.warning(
            "dead letter %s@%s[%s]: %s %s",
            letter.source.topic,
            letter.source.partition,
            letter.source.offset,
            letter.reason.value,
            letter.detail,
        )
        batch.send(
            letter.source.partition,
            functools.partial(
                self._outputs.dead_letter,
                letter.source.key,
                letter.source.value,
                letter.headers(worker_id=self._worker_id),
            ),
        )


@dataclass
class _Batch:
    """What one batch will write once its outputs are confirmed.

    Every applied event gets its own ``RunStateChanged``, but a run's state is written
    (table, changelog, latest-state topic) once per batch, as it stands after the batch's
    last event of that run: the intermediate states are in the changes already, and each
    write costs a RocksDB put and two produced records.
    """

    pending: dict[bytes, bytes] = field(default_factory=dict)
    #: key -> (partition, state bytes after the batch)
    writes: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    #: key -> (partition, state bytes, await its delivery): the latest-state record
    latest: dict[bytes, tuple[int, bytes, bool]] = field(default_factory=dict)
    sends: list[tuple[int, Callable[[], Awaitable[Awaitable[Any]]], bool]] = field(
        default_factory=list
    )
    deliveries: list[Awaitable[Any]] = field(default_factory=list)
    observed: list[tuple[int, RunState]] = field(default_factory=list)

    def send(
        self,
        source_partition: int,
        send: Callable[[], Awaitable[Awaitable[Any]]],
        *,
        confirm: bool = True,
    ) -> None:
        """Queue an output, sent once the batch passed its guard (``confirm``: await it)."""
        self.sends.append((source_partition, send, confirm))

    def write(self, partition: int, key: bytes, value: bytes, *, confirm: bool) -> None:
        """Make ``value`` the run's state after the batch; ``confirm``: a new state, whose
        latest-state record must be delivered before the table write (a re-sent one need
        not be)."""
        self.pending[key] = value
        self.writes[key] = (partition, value)
        earlier = self.latest.get(key)
        self.latest[key] = (partition, value, confirm or (earlier is not None and earlier[2]))


class _DecodedStates:
    """Recently written states, decoded, keyed by run id.

    Decoding a state costs more than applying an event to it, and the processor has just
    encoded every state it will read next. An entry is used only if the table still holds
    exactly the bytes it was made from, so a restore, a rebalance or a write by anything
    else can never make it serve a stale state.
    """

    def __init__(self, decode: Callable[[bytes], RunState], *, limit: int) -> None:
        self._decode = decode
        self._limit = limit
        self._entries: OrderedDict[bytes, tuple[bytes, RunState]] = OrderedDict()

    def get(self, key: bytes, raw: bytes) -> RunState:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == raw:
            self._entries.move_to_end(key)
            return entry[1]
        state = self._decode(raw)
        self.remember(key, raw, state)
        return state

    def remember(self, key: bytes, raw: bytes, state: RunState) -> None:
        if self._limit <= 0:
            return
        self._entries[key] = (raw, state)
        self._entries.move_to_end(key)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)
