"""Regression test for finding F3 (scenario 7): a local-store error is not bad input.

When the state folder was full, opening a partition's RocksDB inside ``table.get`` failed
with ``IO error: No space left on device`` and the processor dead-lettered the *event* as
``processing_error`` and moved on. Had the offset been committed before the worker died,
that event would be skipped for good and every later state of its run would differ from
the fold. A store failure must stop the worker so the record is redelivered (the
processor's own contract: "Raises: only when Kafka or the local store fails").

No Kafka here: the processor's step with a table whose reads fail like rocksdict's do
(a bare ``Exception`` carrying RocksDB's status text).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from runstate.processors.worker import RunProcessor
from runstate.runs.dead_letters import SourceRecord
from runstate.runs.state_codec import StateCodec
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import AgentEvent
from tests.factories import RunBuilder


class FullDiskTable:
    """A RocksDB-backed table on a full disk: opening the partition to read fails."""

    def get(self, key: bytes, *, partition: int) -> bytes | None:
        raise Exception(
            "IO error: No space left on device: While appending to file: runs-0.db/000009.sst"
        )

    def put(self, key: bytes, value: bytes, *, partition: int) -> None:
        raise AssertionError("nothing may be written after a failed read")


class Outputs:
    def __init__(self) -> None:
        self.dead: list[list[tuple[str, bytes]]] = []

    async def _done(self) -> Awaitable[Any]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_change(self, partition: int, key: bytes, change: bytes) -> Awaitable[Any]:
        return await self._done()

    async def send_state(self, partition: int, key: bytes, state: bytes) -> Awaitable[Any]:
        return await self._done()

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        self.dead.append(headers)
        return await self._done()


def _decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
    return decode_event(data, topic=topic, partition=partition, offset=offset)


def test_a_store_read_error_stops_the_worker_instead_of_dead_lettering() -> None:
    outputs = Outputs()
    processor = RunProcessor(
        table=FullDiskTable(),
        outputs=outputs,
        codec=StateCodec(),
        decode=_decode,
        max_event_bytes=64 * 1024,
        worker_id="w-test",
    )
    event = RunBuilder("run-disk").start()
    record = SourceRecord(
        topic="t.events", partition=0, offset=7, key=b"run-disk", value=encode_event(event)
    )

    async def run() -> str:
        return await processor.process(record)

    with pytest.raises(Exception, match="No space left"):
        outcome = asyncio.run(run())
        pytest.fail(f"the record became {outcome!r}, dead letters: {outputs.dead}")
    assert outputs.dead == []
    assert processor.progress.get(0) is None, "the offset must not count as processed"
