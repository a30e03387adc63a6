"""Retention apply reports each step of its plan (what the CLI's progress bar counts)."""

from __future__ import annotations

from pathlib import Path

from runstate.retention.apply import apply_retention, plan_retention, retention_steps

from .support import T0_MS, MemoryKafka, RecordFactory
from .test_apply import NOW, _archive, _context


def test_retention_apply_reports_each_step_of_its_plan(
    tmp_path: Path, record_factory: RecordFactory
) -> None:
    context = _context(tmp_path, holds=("run-held",))
    topic = context.names.events
    kafka = MemoryKafka(topic, {0: {o: T0_MS for o in range(30, 40)}})
    _archive(context, record_factory, 0, 9)
    _archive(context, record_factory, 10, 19, run_ids=["run-held"] * 10)
    _archive(context, record_factory, 20, 29)
    plan = plan_retention(context, kafka, now=NOW)
    steps: list[None] = []
    outcome = apply_retention(context, kafka, plan, on_step=lambda: steps.append(None))
    assert outcome.ok
    # one per trim, one per segment expired (the held one is kept whole: no split)
    assert len(steps) == retention_steps(plan) == len(plan.trims) + len(outcome.expired) == 3
