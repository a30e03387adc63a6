"""The faust side of the processor that needs no broker: the changelog-confirming table."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP, RecordMetadata

from runstate.processors.faust_adapters import ChangelogConfirmingTable


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
