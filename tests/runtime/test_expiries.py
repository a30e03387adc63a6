"""Approval deadlines on the runtime, without Kafka: the task writes the due-time index,
the expiries read it from the committed store."""

from __future__ import annotations

from dataclasses import replace

from runstate.runs.layout import load_run
from runstate.runs.reducer import fold
from runstate.runs.state import ApprovalOutcome
from runstate.runtime.expiries import ApprovalExpiries
from runstate.schemas.convert import decode_event
from runstate.schemas.events import ApprovalExpired
from tests.factories import RunBuilder
from tests.runtime.test_run_task import NAMES, Context, _records, _task


def _waiting(run_id: str, seed: int) -> RunBuilder:
    b = RunBuilder(run_id, seed=seed)  # its clock is in 2025: the approval is long overdue
    b.start()
    b.step("collect")
    b.request_approval("collect")
    return b


def test_an_overdue_approval_is_expired_once_per_resend_period() -> None:
    clock = [100.0]
    ctx = Context()
    events = _waiting("run-e", seed=1).events
    _task().process(_records(events, partition=2), ctx)
    ctx.commit()
    store = ctx.store.open(2)
    expiries = ApprovalExpiries(
        lambda p: store if p == 2 else None,
        names=NAMES,
        worker_id="w1",
        interval_s=1.0,
        resend_s=30.0,
        clock=lambda: clock[0],
    )
    out_ctx = Context()
    assert expiries.send_due(out_ctx, owned={0, 1}) == 0  # not ours
    assert expiries.send_due(out_ctx, owned={2}) == 1
    [out] = out_ctx.outputs
    assert (out.topic, out.key, out.partition) == (NAMES.events, b"run-e", 2)
    event = decode_event(out.value or b"")
    assert isinstance(event, ApprovalExpired) and event.run_id == "run-e"
    clock[0] += 5
    assert expiries.send_due(out_ctx, owned={2}) == 0  # sent recently
    clock[0] += 30
    assert expiries.send_due(out_ctx, owned={2}) == 1  # the first copy may have been lost

    # Applied (through the task, as the events topic would bring it back): no longer due.
    _task().process(_records([event], partition=2, first=len(events)), ctx)
    ctx.commit()
    applied = load_run(store, "run-e")
    assert applied is not None and applied.approval is not None
    assert replace(applied, last_offset=None) == fold([*events, event])
    assert applied.approval.outcome is ApprovalOutcome.EXPIRED
    clock[0] += 60
    assert expiries.send_due(out_ctx, owned={2}) == 0  # nothing pending any more
