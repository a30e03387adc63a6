"""Regression test for finding F3 (scenario 7): a local-store error is not bad input.

When the state folder was full, the faust-era processor's read of a partition failed with
``IO error: No space left on device`` and it dead-lettered the *event* as
``processing_error`` and moved on: had the offset been committed, that event would have
been skipped for good and every later state of its run would differ from the fold. The
runtime's task must let a store failure (``StorageFull``, ``StoreDamaged``, any
``StoreError``) stop the worker instead, with nothing produced and the record not counted
as processed, so the checkpoint commits nothing for it and it is redelivered.

No Kafka here: :class:`~runstate.runtime.run_task.RunTask` with a checkpoint stand-in over
a partition store whose reads fail as the RocksDB store's do.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runstate.errors import StorageFull, StoreDamaged, StoreError
from runstate.runs.dead_letters import SourceRecord
from runstate.runs.state_codec import StateCodec
from runstate.runs.summary import SummaryCodec
from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.runtime.run_task import LayoutTable, RunTask
from runstate.runtime.store import PartitionTransaction
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder


class FailingStore(MemoryPartitionStore):
    """A partition store whose every read fails with ``error``."""

    def __init__(self, partition: int, error: StoreError) -> None:
        super().__init__(partition)
        self.error = error

    def get(self, key: bytes) -> bytes | None:
        raise self.error

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        raise self.error


class Context:
    """The checkpoint's side of the task: overlays, outputs and processed offsets."""

    def __init__(self, store: MemoryPartitionStore) -> None:
        self.store = store
        self.overlays: dict[int, PartitionTransaction] = {}
        self.outputs: list[tuple[str, bytes | None]] = []
        self.positions: dict[int, int] = {}

    def transaction(self, partition: int) -> PartitionTransaction:
        return self.overlays.setdefault(partition, PartitionTransaction(self.store))

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        self.outputs.append((topic, key))

    def processed(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset + 1


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


@pytest.mark.parametrize(
    "error",
    [
        StorageFull("reading partition 0: no space left on the device (IO error: No space left)"),
        StoreDamaged("reading partition 0: the store is damaged (Corruption: block checksum)"),
        StoreError("reading partition 0: IO error: Input/output error"),
    ],
    ids=["full", "damaged", "io-error"],
)
def test_a_store_read_error_stops_the_worker_instead_of_dead_lettering(
    error: StoreError,
) -> None:
    names = TopicNames("t")
    task = RunTask(
        table=LayoutTable(),
        codec=StateCodec(),
        summaries=SummaryCodec(),
        decode=_decode,
        names=names,
        worker_id="w-test",
        max_event_bytes=64 * 1024,
    )
    ctx = Context(FailingStore(0, error))
    event = RunBuilder("run-disk").start()
    record = SourceRecord(
        topic=names.events, partition=0, offset=7, key=b"run-disk", value=encode_event(event)
    )

    with pytest.raises(type(error)):
        outcomes = task.process([record], ctx)
        pytest.fail(f"the record became {outcomes!r}, outputs: {ctx.outputs}")
    assert ctx.outputs == [], "nothing may be produced (no dead letter, no change)"
    assert ctx.positions == {}, "the offset must not count as processed"
