"""Per-event cost as a run grows: the runtime's task path, in process, at a run's 10th,
100th and 1,000th event.

Each event goes through :class:`runstate.runtime.run_task.RunTask` as a batch of its own
(what a live worker sees when many runs interleave: one event of a run per batch), over a
:class:`~runstate.runtime.store.PartitionTransaction` on a memory partition store, and the
interval is committed after it (the writes applied to the store). The run layout writes
only what an event changed and the latest-state output is the run's summary
(:mod:`runstate.runs.summary`), so neither should grow with the run. The steps that might
are timed alone on the same states, and so is the whole-state encode the latest-state
output was until the summary (no longer in the task path; for comparison).

``python -m benchmarks.run_length`` runs the figure alone and writes
``benchmarks/results/<stamp>-run-length.json`` (``make bench`` includes it).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.workload import long_run
from runstate.runs.dead_letters import SourceRecord
from runstate.runs.layout import LayoutCodec, run_writes
from runstate.runs.reducer import Applied, apply
from runstate.runs.state import RunState
from runstate.runs.state_codec import StateCodec
from runstate.runs.summary import SummaryCodec
from runstate.runtime.memory_store import MemoryStore
from runstate.runtime.run_task import LayoutTable, RunTask
from runstate.runtime.store import PartitionTransaction
from runstate.schemas.codec import default_codec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import AgentEvent
from runstate.streams.topics import TopicNames

__all__ = ["LENGTHS", "run_length_cost"]

LENGTHS = (10, 100, 1000)
_NAMES = TopicNames("bench")


@dataclass
class _Collected:
    """The interval a worker's checkpoint would hold: store overlays and produced outputs."""

    store: MemoryStore = field(default_factory=MemoryStore)
    overlays: dict[int, PartitionTransaction] = field(default_factory=dict)
    outputs: list[tuple[str, bytes | None]] = field(default_factory=list)

    def transaction(self, partition: int) -> PartitionTransaction:
        txn = self.overlays.get(partition)
        if txn is None:
            txn = self.overlays[partition] = PartitionTransaction(self.store.open(partition))
        return txn

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        self.outputs.append((topic, value))

    def processed(self, partition: int, offset: int) -> None:
        pass

    def commit(self, offset: int) -> None:
        for p, txn in self.overlays.items():
            self.store.open(p).apply(txn.writes(), changelog_offset=offset)
        self.overlays.clear()
        self.outputs.clear()


def _task() -> RunTask:
    codec = default_codec()

    def decode(data: bytes, *, topic: str, partition: int, offset: int) -> AgentEvent:
        return decode_event(data, codec=codec, topic=topic, partition=partition, offset=offset)

    return RunTask(
        table=LayoutTable(),
        codec=StateCodec(codec),
        summaries=SummaryCodec(codec),
        decode=decode,
        names=_NAMES,
        worker_id="bench",
        max_event_bytes=256 * 1024,
    )


def _one_pass(encoded: Sequence[tuple[bytes, bytes]]) -> list[float]:
    """Microseconds per event (process + commit), in order, from an empty store."""
    task, ctx = _task(), _Collected()
    clock = time.perf_counter
    costs: list[float] = []
    for offset, (key, value) in enumerate(encoded):
        record = SourceRecord(_NAMES.events, 0, offset, key, value)
        t0 = clock()
        outcome = task.process([record], ctx)
        ctx.commit(offset)
        costs.append((clock() - t0) * 1e6)
        if outcome != ["applied"]:
            raise RuntimeError(f"event {offset} was {outcome}, not applied")
    return costs


def _states(events: Sequence[AgentEvent]) -> list[RunState]:
    """The state after each event: what the task's latest-state output summarises."""
    states: list[RunState] = []
    state: RunState | None = None
    for offset, event in enumerate(events):
        outcome = apply(state, event, offset=offset)
        assert isinstance(outcome, Applied)
        state = outcome.state
        states.append(state)
    return states


def _best_us(fn: Callable[[], object], repeats: int) -> float:
    clock = time.perf_counter
    best = math.inf
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best * 1e6


def _apply_us(events: Sequence[AgentEvent], *, repeats: int) -> list[float]:
    """Microseconds of the reducer per event, best of ``repeats`` folds in order.

    Timed within a fold, as the task applies events, not by applying event ``i`` to state
    ``i - 1`` again and again: a state the reducer already appended to has handed its
    request-id set on (:func:`runstate.runs.state.append_model_call`), so re-applying to it
    rebuilds the set each time, which the task never does.
    """
    clock = time.perf_counter
    best = [math.inf] * len(events)
    for _ in range(repeats):
        state: RunState | None = None
        for offset, event in enumerate(events):
            t0 = clock()
            outcome = apply(state, event, offset=offset)
            best[offset] = min(best[offset], clock() - t0)
            assert isinstance(outcome, Applied)
            state = outcome.state
    return [b * 1e6 for b in best]


def _parts_us(
    events: Sequence[AgentEvent], states: Sequence[RunState], i: int, *, repeats: int
) -> dict[str, float]:
    """The steps of event ``i`` that may grow with the run, each timed alone (best of
    ``repeats``): the layout's writes, the change's and the summary's encode; and the
    whole-state encode the latest-state output was before the summary. (The reducer:
    :func:`_apply_us`.)"""
    codec = StateCodec(default_codec())
    summaries = SummaryCodec(default_codec())
    layout = LayoutCodec()
    before = states[i - 1] if i else None
    outcome = apply(before, events[i], offset=i)
    assert isinstance(outcome, Applied)
    change = outcome.change
    return {
        "run_writes_us": _best_us(lambda: run_writes(before, states[i], codec=layout), repeats),
        "encode_change_us": _best_us(lambda: codec.encode_change(change), repeats),
        "encode_summary_us": _best_us(lambda: summaries.encode_state_summary(states[i]), repeats),
        "encode_state_us": _best_us(lambda: codec.encode_state(states[i]), repeats),
    }


def run_length_cost(
    lengths: Sequence[int] = LENGTHS, *, repeats: int = 5, window: int = 5, seed: int = 31
) -> dict[str, Any]:
    """The cost of a run's k-th event for k in ``lengths``, in runs of each length.

    Per run length, the run is processed ``repeats`` times from an empty store; the cost at
    position k is the median over the repeats and over events k-window+1..k (one event is a
    few hundred µs, so single events are too noisy on a shared machine).

    Returns:
        Per length: µs per event at each position up to the length; the steps that may grow
        with the run timed alone at the same positions, the summary's size (what the task
        produces) and the whole state's (what it produced before); and
        ``ratio_last_to_10th`` of the longest run.
    """
    state_codec = StateCodec(default_codec())
    summaries = SummaryCodec(default_codec())
    runs: dict[str, Any] = {}
    for n in lengths:
        pairs = long_run(n, seed=seed)
        encoded = [(e.run_id.encode(), b) for e, b in pairs]
        passes = [_one_pass(encoded) for _ in range(repeats)]
        events = [e for e, _ in pairs]
        states = _states(events)
        applies = _apply_us(events, repeats=repeats)
        at: dict[str, Any] = {}
        for k in (p for p in LENGTHS if p <= n):
            lo = max(0, k - window)
            task_us = statistics.median(c for costs in passes for c in costs[lo:k])
            parts = [_parts_us(events, states, i, repeats=repeats) for i in range(lo, k)]
            medians = {name: statistics.median(p[name] for p in parts) for name in parts[0]}
            medians["apply_us"] = statistics.median(applies[lo:k])
            at[str(k)] = {
                "task_us": task_us,
                **medians,
                "summary_bytes": len(summaries.encode_state_summary(states[k - 1])),
                "state_bytes": len(state_codec.encode_state(states[k - 1])),
            }
        runs[str(n)] = {"events": n, "at": at}
    longest = runs[str(max(lengths))]["at"]
    first, last = longest.get("10"), longest.get(str(max(lengths)))
    ratio = last["task_us"] / first["task_us"] if first and last else None
    return {
        "repeats": repeats,
        "window": window,
        "batch": 1,
        "latest_state": "summary",
        "runs": runs,
        "ratio_last_to_10th": ratio,
        "goal_ratio": 1.3,
    }


def main(argv: Sequence[str] = ()) -> int:
    """Run the figure alone; write it as ``{"run_length": ...}`` beside the other results."""
    figure = run_length_cost()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(argv[0]) if argv else Path(__file__).parent / "results" / f"{stamp}-run-length.json"
    out.write_text(json.dumps({"run_length": figure}, indent=1) + "\n")
    print(f"1,000th / 10th: {figure['ratio_last_to_10th']:.2f}x; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
