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
* a batch whose offsets skip ahead of the previous one's stops the process
  (``EXIT_OFFSET_GAP``) so the skipped records are redelivered;
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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from runstate.processors.dead_letters import SourceRecord
from runstate.processors.fencing import (
    EXIT_BATCH_FAILED,
    EXIT_FENCED,
    EXIT_OFFSET_GAP,
    BatchFence,
    Fenced,
    OffsetContinuity,
    OffsetGap,
)
from runstate.processors.worker import RunProcessor, StorageFull

__all__ = ["BatchLoop", "Halt", "withhold_ack"]

log = logging.getLogger(__name__)

#: ``halt(reason, code, *, restart_in_place)``: never returns in production.
Halt = Callable[..., None]


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
        committed: Callable[[int], int | None] = lambda _: None,
        retry_max_s: float = 5.0,
    ) -> None:
        self._processor = processor
        self._table = table
        self.fence = fence
        self.continuity = OffsetContinuity()
        self._halt = halt
        self._restart_when_fenced = restart_when_fenced
        self._retry_max_s = retry_max_s
        self._committed = committed
        self.storage_full_retries = 0

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
            self.continuity.check(
                ((r.partition, r.offset) for r in records), committed=self._committed
            )
        except OffsetGap as exc:
            withhold_ack(events)
            self._halt(str(exc), EXIT_OFFSET_GAP, restart_in_place=self._restart_when_fenced)
            return []
        self._table.bind(events)
        stalls = self.fence.begin()
        delay = 0.2
        while True:
            try:
                outcomes = await self._processor.process_batch(records, guard=self.fence)
                break
            except Fenced as exc:
                withhold_ack(events)
                self._halt(str(exc), EXIT_FENCED, restart_in_place=self._restart_when_fenced)
                return []
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
                    return []
                if gone:
                    log.warning("partitions %s were revoked while the store was full;"
                                " dropping the batch unwritten", sorted(gone))  # fmt: skip
                    withhold_ack(events)
                    self.continuity.reset()
                    return ["dropped"] * len(records)
            except Exception as exc:
                withhold_ack(events)
                first = records[0]
                self._halt(
                    f"cannot process a batch from partition {first.partition} offset"
                    f" {first.offset} ({exc!r}); its records are redelivered after a restart",
                    EXIT_BATCH_FAILED,
                )
                return []
        dropped = [e for e, o in zip(events, outcomes, strict=True) if o == "dropped"]
        if dropped:
            withhold_ack(dropped)
            self.continuity.reset({e.message.partition for e in dropped})
        return outcomes
