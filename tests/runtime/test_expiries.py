"""Approval deadlines on the runtime, without Kafka."""

from __future__ import annotations

from runstate.runs.reducer import fold
from runstate.runs.state import ApprovalOutcome
from runstate.runtime.expiries import ApprovalExpiries
from runstate.runtime.run_task import WholeStateTable
from runstate.schemas.convert import decode_event
from runstate.schemas.events import ApprovalExpired
from tests.factories import RunBuilder
from tests.runtime.test_run_task import CODEC, NAMES, Context, _records, _task


def _waiting(run_id: str, seed: int) -> RunBuilder:
    b = RunBuilder(run_id, seed=seed)  # its clock is in 2025: the approval is long overdue
    b.start()
    b.step("collect")
    b.request_approval("collect")
    return b


def test_an_overdue_approval_is_expired_once_per_resend_period() -> None:
    clock = [100.0]
    expiries = ApprovalExpiries(
        names=NAMES, worker_id="w1", interval_s=1.0, resend_s=30.0, clock=lambda: clock[0]
    )
    state = fold(_waiting("run-e", seed=1).events)
    assert state is not None
    expiries.observe(2, state)
    ctx = Context()
    assert expiries.send_due(ctx, owned={0, 1}) == 0  # not ours
    assert expiries.send_due(ctx, owned={2}) == 1
    [out] = ctx.outputs
    assert (out.topic, out.key, out.partition) == (NAMES.events, b"run-e", 2)
    event = decode_event(out.value or b"")
    assert isinstance(event, ApprovalExpired) and event.run_id == "run-e"
    clock[0] += 5
    assert expiries.send_due(ctx, owned={2}) == 0  # sent recently
    clock[0] += 30
    assert expiries.send_due(ctx, owned={2}) == 1  # the first copy may have been lost
    applied = fold([*_waiting("run-e", seed=1).events, event])
    assert applied is not None and applied.approval is not None
    assert applied.approval.outcome is ApprovalOutcome.EXPIRED
    expiries.observe(2, applied)
    clock[0] += 60
    assert expiries.send_due(ctx, owned={2}) == 0  # nothing pending any more


def test_the_task_keeps_the_index_current_and_a_restored_store_fills_it() -> None:
    seen: list[tuple[int, str]] = []
    task = _task()
    task._on_state = lambda p, s: seen.append((p, s.run_id))
    ctx = Context()
    task.process(_records(_waiting("run-w", seed=2).events, partition=1), ctx)
    assert seen == [(1, "run-w")]
    ctx.commit()
    [state] = list(WholeStateTable(CODEC).states(ctx.store.open(1)))
    expiries = ApprovalExpiries(names=NAMES, worker_id="w1")
    expiries.load_partition(1, [state])
    assert len(expiries.index) == 1
