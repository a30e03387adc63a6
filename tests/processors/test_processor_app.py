"""The faust side of the processor: the changelog-confirming table (no broker) and the app's
producer path (on the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import faust
import pytest
from faust.types import TP, RecordMetadata

from runstate.processors.faust_adapters import ChangelogConfirmingTable, RunStateApp, raw_topic


def test_table_waits_for_the_changelog_records_faust_only_queued() -> None:
    """faust queues a table write's changelog record in its producer buffer; the table must
    hand back exactly that record's future so a batch can wait for its delivery."""

    async def scenario() -> None:
        app = faust.App("rs-test-confirm", store="memory://", autodiscover=False)
        table = app.tables.add(
            ChangelogConfirmingTable(
                app, name="runs", beacon=app.tables.beacon, key_type=bytes, value_type=bytes
            )
        )
        assert await table.confirm_changelog() == 0
        table.send_changelog(1, b"run-a", b"state")
        confirming = asyncio.create_task(table.confirm_changelog())
        await asyncio.sleep(0.05)
        assert not confirming.done()  # queued in faust's buffer, not delivered
        queued = app.producer.buffer.pending.get_nowait()
        queued.set_result(
            RecordMetadata(
                topic="runs-changelog", partition=1, topic_partition=TP("c", 1), offset=0
            )
        )
        assert await confirming == 1
        assert await table.confirm_changelog() == 0

    asyncio.run(scenario())


def test_undeliverable_changelog_record_fails_the_confirmation() -> None:
    async def scenario() -> None:
        app = faust.App("rs-test-confirm-fail", store="memory://", autodiscover=False)
        table = app.tables.add(
            ChangelogConfirmingTable(
                app, name="runs", beacon=app.tables.beacon, key_type=bytes, value_type=bytes
            )
        )
        table.send_changelog(0, b"run-a", b"state")
        app.producer.buffer.pending.get_nowait().set_exception(ConnectionError("broker gone"))
        with pytest.raises(ConnectionError):
            await table.confirm_changelog()

    asyncio.run(scenario())


@pytest.mark.integration
def test_sending_outputs_does_not_yield_to_the_event_loop_once_the_producer_runs(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """faust's producer lookup yields three times per record; each yield let aiokafka ship
    a produce request with the few records appended so far. A batch's sends must reach the
    accumulator in one go and leave together when the batch awaits them."""

    async def scenario() -> None:
        app = RunStateApp(
            unique_name("rs-test-send"),
            broker=f"kafka://{kafka_bootstrap}",
            store="memory://",
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
        )
        topic = raw_topic(app, unique_name("rs-test-send-out"), 1)
        await topic.maybe_declare()  # starts the producer through app.maybe_start_producer
        assert app.producer.started
        try:
            ticks = 0

            async def count_ticks() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0)
                    ticks += 1

            ticker = asyncio.create_task(count_ticks())
            await asyncio.sleep(0)
            before = ticks
            sent = [await topic.send(key=b"run-%d" % i, value=b"x", partition=0) for i in range(50)]
            during = ticks - before
            ticker.cancel()
            offsets = [m.offset for m in await asyncio.gather(*sent)]
            assert during == 0
            assert offsets == sorted(offsets) and len(set(offsets)) == 50
        finally:
            await app.producer.stop()

    asyncio.run(scenario())
