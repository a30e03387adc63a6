"""Finished runs leave the hot store after a while: a year of runs is not all kept hot.

A run that completed, failed or was cancelled, and to which nothing was applied for
``hot_for_s`` (default 30 days), is removed from its partition's store, from the changelog
(tombstones for its head, entries and index keys) and from the latest-state topic (a
tombstone), inside the checkpoint's transaction like every other write. Its events stay where
the retention policy keeps them (Kafka, then the archive), so ``runstate replay --run ID``
still rebuilds it, final state and history, at any past moment.

Each tick reads the ``finished`` index of each owned partition up to the cut-off only (at
most ``limit`` runs per partition), so its cost follows the runs leaving, not the runs held.
A run's event journal (:mod:`runstate.runs.journal`) goes with it: a prefix scan of the
run's journal keys, one tombstone each. A journal grows with its run, so a tick deletes at
most ``journal_budget`` journal keys in all; a run whose journal is not gone within that budget
keeps its head and index keys (it stays in the ``finished`` index) and the next tick goes on
where this one stopped. So a tick's transaction stays bounded even for a run of a million
events.

An event that arrives for a run after it left (a late model-call audit line) finds no run and
is dead-lettered as an orphan, like any event of an unknown run.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from runstate.runs.deadlines import utc_now
from runstate.runs.journal import journal_prefix
from runstate.runs.keyspace import prefix_end
from runstate.runs.layout import load_run, run_deletes
from runstate.runs.run_index import finished_before
from runstate.runtime.outputs import StoreOutputs
from runstate.runtime.store import PartitionTransaction
from runstate.streams.topics import TopicNames

__all__ = ["FinishedRunEviction"]

log = logging.getLogger(__name__)


class FinishedRunEviction:
    """Removes finished runs idle for ``hot_for_s`` from the hot store, a batch per tick.

    Args:
        names: The deployment's topics (the latest-state topic gets the tombstones).
        hot_for_s: How long a finished run stays after its last event; 0 keeps runs forever.
        forget: Told which runs left, so no decoded copy of them is served afterwards.
        interval_s: Seconds between ticks.
        limit: Most runs removed per partition per tick.
        journal_budget: Most journal entries removed per tick (all partitions).
    """

    def __init__(
        self,
        *,
        names: TopicNames,
        hot_for_s: float,
        forget: Callable[[Iterable[str]], None],
        interval_s: float = 60.0,
        limit: int = 500,
        journal_budget: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._names = names
        self._hot_for = timedelta(seconds=hot_for_s)
        self._forget = forget
        self._interval_s = interval_s
        self._limit = limit
        self._journal_budget = journal_budget
        self._clock = clock
        self._last = clock()
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        return self._hot_for > timedelta(0)

    def due(self) -> bool:
        return self.enabled and self._clock() - self._last >= self._interval_s

    def evict_due(
        self, ctx: StoreOutputs, *, owned: Iterable[int], now: datetime | None = None
    ) -> int:
        """Remove the runs past their time from the owned partitions; returns how many."""
        self._last = self._clock()
        cutoff = (now or utc_now()) - self._hot_for
        gone: list[str] = []
        budget = self._journal_budget
        for partition in sorted(owned):
            committed = ctx.committed_store(partition)
            if committed is None:
                continue
            candidates = finished_before(committed, cutoff, limit=self._limit)
            if not candidates:
                continue
            txn = ctx.transaction(partition)
            for run_id in candidates:
                # The interval's own writes win: a late event may have moved the run since.
                state = load_run(txn, run_id)
                if state is None or not state.is_terminal or state.updated_at >= cutoff:
                    continue
                budget -= _drop_journal(txn, run_id, budget)
                if budget <= 0:
                    break  # the journal may go on; the run stays until a later tick
                for key, _value in run_deletes(state):
                    txn.delete(key)
                ctx.produce(self._names.latest_state, run_id.encode(), None, partition=partition)
                gone.append(run_id)
            if budget <= 0:
                break
        if gone:
            self._forget(gone)
            self.evicted += len(gone)
            log.info(
                "%s finished runs left the hot store (idle since before %s)", len(gone), cutoff
            )
        return len(gone)


def _drop_journal(txn: PartitionTransaction, run_id: str, budget: int) -> int:
    """Delete up to ``budget`` journal entries of the run (oldest first); how many. Fewer
    than ``budget`` means the journal is gone."""
    prefix = journal_prefix(run_id)
    doomed = list(itertools.islice(txn.items(prefix, prefix_end(prefix)), budget))
    for key, _value in doomed:
        txn.delete(key)
    return len(doomed)
