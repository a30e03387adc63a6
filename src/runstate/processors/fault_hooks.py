"""Fault injection for the crash tests; inert unless their environment variables are set."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust

from runstate.processors.faust_adapters import FaustOutputs

__all__ = ["install_fault_hooks"]

log = logging.getLogger(__name__)


def install_fault_hooks(app: faust.App, outputs: FaustOutputs) -> None:
    """Fault injection for the crash tests; inert unless their variables are set.

    ``RUNSTATE_TEST_FAIL_CHANGE_AT=<n>``: the delivery of the n-th RunStateChanged fails
    (as a broker error would).

    ``RUNSTATE_TEST_HOLD_FIRST_CHANGELOG_S``: faust's first changelog send waits that long
    (one slow broker round trip). ``RUNSTATE_TEST_EXIT_AFTER_COMMIT``: the process ends at
    once, as with kill -9, right after its first offset commit succeeded.
    """
    hold_s = float(os.environ.get("RUNSTATE_TEST_HOLD_FIRST_CHANGELOG_S") or 0)
    if hold_s > 0:
        buffer: Any = app.producer.buffer
        send_pending = buffer._send_pending
        held: list[bool] = []

        async def slow_first_send(fut: Any) -> None:
            if not held:
                held.append(True)
                await asyncio.sleep(hold_s)
            await send_pending(fut)

        buffer._send_pending = slow_first_send
    if os.environ.get("RUNSTATE_TEST_EXIT_AFTER_COMMIT"):
        consumer: Any = app.consumer
        commit = consumer._commit

        async def commit_then_die(offsets: Any) -> bool:
            done = bool(await commit(offsets))
            if done:
                log.critical(
                    "RUNSTATE_TEST_EXIT_AFTER_COMMIT: exiting after committing %s", offsets
                )
                os._exit(137)
            return done

        consumer._commit = commit_then_die
    fail_at = int(os.environ.get("RUNSTATE_TEST_FAIL_CHANGE_AT") or 0)
    if fail_at > 0:
        send_change = outputs.send_change
        count = [0]

        async def failing_send_change(partition: int, key: bytes, change: bytes) -> Any:
            count[0] += 1
            if count[0] == fail_at:
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(RuntimeError("RUNSTATE_TEST_FAIL_CHANGE_AT: delivery failed"))
                return failed
            return await send_change(partition, key, change)

        outputs.send_change = failing_send_change  # type: ignore[method-assign]
