"""Finished runs leave the hot store after their time, with tombstones; open ones stay."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from runstate.runs.keyspace import KeyValueReader
from runstate.runs.layout import load_run
from runstate.runs.run_index import rebuild_indexes
from runstate.runtime.eviction import FinishedRunEviction
from tests.factories import make_run
from tests.runtime.test_run_task import NAMES, Context, _records, _task


@dataclass
class EvictionContext(Context):
    def committed_store(self, partition: int) -> KeyValueReader | None:
        return self.store.open(partition)


def test_a_finished_run_past_its_time_leaves_store_changelog_and_latest_state() -> None:
    done = make_run("run-done", seed=1, end="completed")
    failed = make_run("run-failed", seed=2, end="failed")
    still_open = make_run("run-open", seed=3, end="open")
    ctx = EvictionContext()
    task = _task()
    events = [*done, *failed, *still_open]
    task.process(_records(events), ctx)
    ctx.commit()
    last = max(e.occurred_at for e in events)
    forgotten: list[str] = []
    eviction = FinishedRunEviction(
        names=NAMES, hot_for_s=3600, forget=forgotten.extend, interval_s=1.0
    )

    assert eviction.evict_due(ctx, owned={0}, now=last + timedelta(minutes=59)) == 0
    assert eviction.evict_due(ctx, owned={0}, now=last + timedelta(hours=2)) == 2

    writes = dict(ctx.transaction(0).writes())
    assert writes and all(v is None for v in writes.values())  # tombstones only
    tombstones = [o for o in ctx.on(NAMES.latest_state)]
    assert sorted((o.key, o.value) for o in tombstones) == [
        (b"run-done", None),
        (b"run-failed", None),
    ]
    assert sorted(forgotten) == ["run-done", "run-failed"]
    ctx.commit()
    store = ctx.store.open(0)
    assert load_run(store, "run-done") is None and load_run(store, "run-failed") is None
    assert load_run(store, "run-open") is not None
    assert rebuild_indexes(store) == []  # no index entry of a gone run is left behind
    keys = [k for k, _ in store.items(b"", b"\xff")]
    assert not any(b"run-done" in k or b"run-failed" in k for k in keys)


def test_hot_for_zero_keeps_runs_forever() -> None:
    eviction = FinishedRunEviction(names=NAMES, hot_for_s=0, forget=lambda ids: None)
    assert not eviction.enabled and not eviction.due()
