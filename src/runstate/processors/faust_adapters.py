"""faust seen through the processor's ports: output topics, the changelog-confirming table,
and the table per partition (see :mod:`runstate.processors.worker` for the ports)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Iterable
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import ProducerT
from mode.utils.futures import stampede

from runstate.processors.fencing import keep_monotonic

__all__ = [
    "ChangelogConfirmingTable",
    "FaustOutputs",
    "FaustRunTable",
    "RunStateApp",
    "raw_topic",
]

log = logging.getLogger(__name__)


class RunStateApp(faust.App):
    """faust's App, minus three event-loop yields per produced record.

    Every ``Topic.send`` and every changelog record faust drains from its producer buffer
    asks ``App.maybe_start_producer`` for the producer. faust guards that call against
    concurrent starts with mode's ``stampede``, which runs ``asyncio.sleep(0)`` three
    times on *every* call, started or not. Each yield lets aiokafka's sender ship what has
    been appended so far, so a batch's outputs went out as a produce request every few records
    (measured: about 20 requests and 0.5 ms of socket write each per 30-event batch, at
    500 events/s), and latency grew with the load. Once the producer runs, the call
    returns it directly, as ``maybe_start`` would after its own no-op: the records then
    reach aiokafka's accumulator without a yield and leave together when the batch awaits
    them. Nothing about delivery, order or acknowledgement changes.
    """

    async def maybe_start_producer(self) -> ProducerT:
        producer = self.producer
        if not self.in_transaction and producer.started:
            return producer
        started: ProducerT = await self._start_producer()
        return started

    @stampede
    async def _start_producer(self) -> ProducerT:
        # faust's own maybe_start_producer. Not reached through super(): the stampede caches
        # its wrapper in the instance's __dict__ under the method's name, which would shadow
        # the override above from then on.
        if self.in_transaction:
            transactions: ProducerT = self.consumer.transactions
            return transactions
        await self.producer.maybe_start()
        return self.producer


def raw_topic(app: faust.App, name: str, partitions: int | None = None) -> Any:
    """A topic whose keys and values pass through faust as bytes, untouched."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


class FaustOutputs:
    """The output topics, sent through faust's producer (flushed before each commit)."""

    def __init__(self, *, state_changes: Any, latest_state: Any, dead_letters: Any) -> None:
        self._changes = state_changes
        self._latest = latest_state
        self._dead = dead_letters

    async def send_change(self, partition: int, key: bytes, change: bytes) -> Awaitable[Any]:
        sent: Awaitable[Any] = await self._changes.send(key=key, value=change, partition=partition)
        return sent

    async def send_state(self, partition: int, key: bytes, state: bytes) -> Awaitable[Any]:
        sent: Awaitable[Any] = await self._latest.send(key=key, value=state, partition=partition)
        return sent

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        sent: Awaitable[Any] = await self._dead.send(key=key, value=value, headers=headers)
        return sent


class ChangelogConfirmingTable(faust.Table[bytes, bytes]):
    """A faust Table whose changelog records can be awaited.

    faust queues a table write's changelog record in its producer buffer and relies on the
    flush before each offset commit to deliver it, but that flush gives up after 0.1 s
    without a send (``ProducerBuffer.flush_atmost``): under load the source offsets are
    then committed while changelog records are still queued, and a kill -9 loses them
    for good (the redelivery that would re-send them never comes). Keeping each record's
    future lets the processor wait for the changelog before its batch can be committed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[Any] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Restore (and standby updates) never take a run back to an older version.

        A worker that stalled past its session timeout may have sent changelog records after
        the new owner's (the residual window of :mod:`runstate.processors.fencing`); applied
        in log order they would regress the run. Keeping the higher version per key makes
        such a stale record harmless.
        """
        store: Any = self.data

        def local(partition: int, key: bytes) -> bytes | None:
            db_for = getattr(store, "_db_for_partition", None)
            value: bytes | None = db_for(partition).get(key) if db_for else store.get(key)
            return value

        def stale(event: Any, incoming: int, have: int) -> None:
            # Mostly a replay from a persisted offset behind the store; rarely a zombie's write.
            log.debug(
                "changelog %s[%s]@%s: ignored v%s of %r, the store holds v%s",
                event.message.topic,
                event.message.partition,
                event.message.offset,
                incoming,
                event.message.key,
                have,
            )

        kept = list(
            keep_monotonic(
                batch,
                key_value=lambda e: (e.message.partition, e.message.key, e.message.value),
                local=local,
                on_stale=stale,
            )
        )
        super().apply_changelog_batch(kept)

    async def confirm_changelog(self) -> int:
        """Wait until every changelog record queued so far is on the broker.

        Returns how many records were awaited.

        Raises:
            Exception: a record could not be delivered (the worker must stop).
        """
        pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            await asyncio.gather(*pending)
        return len(pending)


class FaustRunTable:
    """The faust table seen per partition.

    faust picks a table key's RocksDB partition (and changelog partition) from the event
    being processed; in a batch that is not the record at hand, so each access names an
    event of the right partition first.
    """

    def __init__(self, table: Any) -> None:
        self._table = table
        self._events: dict[int, Any] = {}

    def bind(self, events: Iterable[Any]) -> None:
        """Remember one event per partition of the batch about to be processed."""
        self._events = {e.message.partition: e for e in events}

    def _as(self, partition: int) -> None:
        _current_event.set(weakref.ref(self._events[partition]))

    def get(self, key: bytes, *, partition: int) -> bytes | None:
        self._as(partition)
        value: bytes | None = self._table.get(key)
        return value

    def put(self, key: bytes, value: bytes, *, partition: int) -> None:
        self._as(partition)
        self._table[key] = value

    async def confirm(self) -> None:
        await self._table.confirm_changelog()
