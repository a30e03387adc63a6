"""The faust agent's loop around :meth:`RunProcessor.process_batch`: what happens when a
batch cannot be finished.

faust's ``take_events`` acknowledges a batch in its clean-up even when the code processing it
raised, and faust commits acknowledged offsets when it stops. So no failure path here may
let an unfinished batch be acknowledged:

* a batch that failed (an output not delivered, a store error) stops the process at once
  with :data:`~runstate.processors.fencing.EXIT_BATCH_FAILED`, before faust's clean-up runs;
* a fenced batch (the worker stalled, see :mod:`runstate.processors.fencing`) writes nothing
  and restarts the process (or exits with ``EXIT_FENCED``);
* records of partitions revoked mid-batch are dropped unacknowledged;
* records past a partition's commit mark (a hole: faust acked records it never delivered,
  see :mod:`runstate.processors.commit_marks`) are not processed; the partition is sought
  back to its mark so they are redelivered. Records fetched before the seek keep arriving
  for a while (faust's buffers); for ``seek_grace_s`` after a seek they are held without
  another seek. A hole that does not close after ``max_rewinds`` seeks stops the process
  (``EXIT_OFFSET_GAP``);
* a full local store makes the loop retry the same batch, unacknowledged, until space
  returns (or its partitions are revoked);
* a batch interrupted by cancellation (faust stopping the agent on SIGTERM, after its
  ``App.on_stop`` began) is left unacknowledged: faust closes ``take_events`` afterwards,
  whose clean-up would ack the unfinished batch, and the consumer's stop then commits it -
  offsets past events whose table write never happened (their outputs may already be out).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from runstate.processors.commit_marks import CommitMarks
from runstate.processors.fencing import (
    EXIT_BATCH_FAILED,
    EXIT_FENCED,
    EXIT_OFFSET_GAP,
    BatchFence,
    Fenced,
)
from runstate.processors.worker import RunProcessor, StorageFull
from runstate.runs.dead_letters import SourceRecord

__all__ = ["BatchLoop", "Halt", "withhold_ack"]

log = logging.getLogger(__name__)

#: ``halt(reason, code, *, restart_in_place)``: never returns in production.
Halt = Callable[..., None]
#: The group's committed offset (or the log start) of each partition asked for.
StartOffsets = Callable[[Collection[int]], Awaitable[Mapping[int, int]]]
#: Seek one events partition of the consumer to an offset.
Rewind = Callable[[int, int], Awaitable[None]]


class BoundTable(Protocol):
    def bind(self, events: Sequence[Any]) -> None: ...


def withhold_ack(events: Sequence[Any]) -> None:
    """Make faust's coming ``ack`` of these events a no-op, so their offsets are never
    committed: a message already marked acked is skipped by the consumer's bookkeeping."""
    for event in events:
        event.message.acked = True


def source_records(events: Sequence[Any]) -> list[SourceRecord]:
    return [
        SourceRecord(
            topic=e.message.topic,
            partition=e.message.partition,
            offset=e.message.offset,
            key=e.message.key,
            value=e.message.value,
            headers=tuple(e.message.headers or ()),
        )
        for e in events
    ]


class BatchLoop:
    """Processes faust event batches with the guarantees in the module docstring."""

    def __init__(
        self,
        *,
        processor: RunProcessor,
        table: BoundTable,
        fence: BatchFence,
        halt: Halt,
        restart_when_fenced: bool,
        start_offsets: StartOffsets,
        rewind: Rewind,
        marks: CommitMarks | None = None,
        max_rewinds: int = 3,
        seek_grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        retry_max_s: float = 5.0,
    ) -> None:
        self._processor = processor
        self._table = table
        self.fence = fence
        self.marks = marks if marks is not None else CommitMarks()
        self._halt = halt
        self._restart_when_fenced = restart_when_fenced
        self._retry_max_s = retry_max_s
        self._start_offsets = start_offsets
        self._rewind = rewind
        self._max_rewinds = max_rewinds
        #: Seeks back to the mark per partition since its mark last moved.
        self.rewinds: dict[int, int] = {}
        self.rewinds_total = 0
        self._seek_grace_s = seek_grace_s
        self._clock = clock
        #: partition -> (mark sought back to, when): records past it are stale until then.
        self._sought: dict[int, tuple[int, float]] = {}
        self.storage_full_retries = 0

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Partitions revoked (or all, on an assignment): their marks start anew."""
        gone = None if partitions is None else set(partitions)
        self.marks.forget(gone)
        for seen in (self.rewinds, self._sought):
            for p in list(seen) if gone is None else gone:
                seen.pop(p, None)

    async def handle(self, events: Sequence[Any]) -> list[str]:
        """Process one batch of faust events; returns each record's outcome."""
        try:
            return await self._handle(events)
        except BaseException:
            # Cancelled (faust stopping: SIGTERM) or interrupted: nothing of the batch may be
            # acked by take_events' clean-up, or the stop commit would skip it.
            withhold_ack(events)
            raise

    async def _handle(self, events: Sequence[Any]) -> list[str]:
        records = source_records(events)
        try:
            unknown = self.marks.unknown(r.partition for r in records)
            if unknown:
                for partition, offset in (await self._start_offsets(unknown)).items():
                    self.marks.start(partition, offset)
        except Exception as exc:
            withhold_ack(events)
            self._halt(
                f"cannot read the group's committed offsets ({exc!r}); the batch is"
                " redelivered after a restart",
                EXIT_BATCH_FAILED,
            )
            return []
        plan = self.marks.plan((r.partition, r.offset) for r in records)
        if plan.holes:
            withhold_ack([e for e, ok in zip(events, plan.accepted, strict=True) if not ok])
            if not await self._seek_back(plan.holes, events):
                return []
            events = [e for e, ok in zip(events, plan.accepted, strict=True) if ok]
            records = [r for r, ok in zip(records, plan.accepted, strict=True) if ok]
        outcomes = await self._process(events, records) if records else []
        if outcomes is None:
            return []
        dropped = [e for e, o in zip(events, outcomes, strict=True) if o == "dropped"]
        if dropped:
            withhold_ack(dropped)
        gone = {e.message.partition for e in dropped}
        moved = self.marks.advance({p: m for p, m in plan.moves.items() if p not in gone})
        for partition in moved:
            self.rewinds.pop(partition, None)
            self._sought.pop(partition, None)
        if not plan.holes:
            return outcomes
        done = iter(outcomes)
        return [next(done) if ok else "held" for ok in plan.accepted]

    async def _seek_back(self, holes: Mapping[int, tuple[int, int]], events: Sequence[Any]) -> bool:
        """Seek each partition with a hole back to its mark; False if the process halted."""
        now = self._clock()
        for partition, (mark, got) in sorted(holes.items()):
            sought = self._sought.get(partition)
            if sought is not None and sought[0] == mark and now - sought[1] < self._seek_grace_s:
                continue  # fetched before the seek took effect: held, no new seek
            tries = self.rewinds.get(partition, 0) + 1
            if tries > self._max_rewinds:
                withhold_ack(events)
                self._halt(
                    f"partition {partition}: records {mark}..{got - 1} were not delivered"
                    f" after {self._max_rewinds} seeks back to offset {mark}. Restarting"
                    " without committing past them so they are redelivered",
                    EXIT_OFFSET_GAP,
                    restart_in_place=self._restart_when_fenced,
                )
                return False
            self.rewinds[partition] = tries
            self.rewinds_total += 1
            self._sought[partition] = (mark, now)
            log.warning(
                "partition %d: got offset %d while %d..%d were never delivered (acked"
                " unprocessed by the consumer); seeking back to %d (try %d of %d)",
                partition, got, mark, got - 1, mark, tries, self._max_rewinds,
            )  # fmt: skip
            await self._rewind(partition, mark)
        return True

    async def _process(
        self, events: Sequence[Any], records: list[SourceRecord]
    ) -> list[str] | None:
        """The batch's outcomes, or None if it was not processed (halted or dropped whole)."""
        self._table.bind(events)
        stalls = self.fence.begin()
        delay = 0.2
        while True:
            try:
                return await self._processor.process_batch(records, guard=self.fence)
            except Fenced as exc:
                withhold_ack(events)
                self._halt(str(exc), EXIT_FENCED, restart_in_place=self._restart_when_fenced)
                return None
            except StorageFull as exc:
                self.storage_full_retries += 1
                if self.storage_full_retries % 20 == 1:
                    log.error("%s (retry %d)", exc, self.storage_full_retries)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                try:
                    gone = self.fence.check(stalls, {r.partition for r in records}, before="retry")
                except Fenced as fenced:
                    withhold_ack(events)
                    self._halt(str(fenced), EXIT_FENCED, restart_in_place=self._restart_when_fenced)
                    return None
                if gone:
                    log.warning("partitions %s were revoked while the store was full;"
                                " dropping the batch unwritten", sorted(gone))  # fmt: skip
                    withhold_ack(events)
                    return ["dropped"] * len(records)
            except Exception as exc:
                withhold_ack(events)
                first = records[0]
                self._halt(
                    f"cannot process a batch from partition {first.partition} offset"
                    f" {first.offset} ({exc!r}); its records are redelivered after a restart",
                    EXIT_BATCH_FAILED,
                )
                return None
