"""``python -m benchmarks.loop_collector``: what collecting at the loop's chosen point costs.

The runtime's task (:class:`runstate.runtime.run_task.RunTask`) over a RocksDB partition
store, in batches of 500 records each committed to the store, as a worker's loop does; in
alternating rounds in one process, the cyclic garbage collector either runs by itself
(CPython's automatic collection with the worker's thresholds, as before) or only where the
loop calls :meth:`~runstate.runtime.collector.LoopCollector.collect_due`, after each batch.
Prints events/s of each round, the ratio loop / automatic per round pair, and the
collections by generation with the longest one. No Kafka: the broker's share is the same
either way.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run_length import _NAMES, _task
from benchmarks.workload import generate
from runstate.runs.dead_letters import SourceRecord
from runstate.runtime.collector import (
    GC_OLDER_THRESHOLDS,
    GC_YOUNG_THRESHOLD,
    LoopCollector,
    quiet_collector,
)
from runstate.runtime.rocksdb_store import RocksDBStore
from runstate.runtime.store import PartitionTransaction

__all__ = ["main"]

BATCH = 500


def _round(encoded: list[bytes], keys: list[bytes], *, loop: bool, data: Path) -> dict[str, Any]:
    thresholds = gc.get_threshold()
    gc.enable()
    gc.unfreeze()
    if loop:
        quiet_collector()
    else:
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)
    collector = LoopCollector()
    pauses: list[tuple[int, float]] = []
    began: list[float] = []

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began.append(time.perf_counter())
        elif began:
            pauses.append((info["generation"], (time.perf_counter() - began.pop()) * 1000))

    store = RocksDBStore(data)
    part = store.open(0)
    task = _task()
    gc.callbacks.append(timed)
    started = time.perf_counter()
    try:
        for at in range(0, len(encoded), BATCH):
            txn = PartitionTransaction(part)
            ctx = _Interval(txn)
            records = [
                SourceRecord(_NAMES.events, 0, at + i, keys[at + i], value)
                for i, value in enumerate(encoded[at : at + BATCH])
            ]
            task.process(records, ctx)
            part.apply(txn.writes(), changelog_offset=at + len(records) - 1)
            del txn, ctx, records
            collector.collect_due()
        seconds = time.perf_counter() - started
    finally:
        gc.callbacks.remove(timed)
        store.close()
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    by_gen = [sum(1 for g, _ in pauses if g == n) for n in range(3)]
    return {
        "events_per_s": len(encoded) / seconds,
        "collections": by_gen,
        "longest_ms": max((ms for _, ms in pauses), default=0.0),
        "longest_full_ms": max((ms for g, ms in pauses if g == 2), default=0.0),
    }


class _Interval:
    """The task's view of one interval: the partition's overlay; outputs are dropped."""

    def __init__(self, txn: PartitionTransaction) -> None:
        self._txn = txn

    def transaction(self, partition: int) -> PartitionTransaction:
        return self._txn

    def produce(self, topic: str, key: bytes | None, value: bytes | None, **_: Any) -> None:
        pass

    def processed(self, partition: int, offset: int) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_collector")
    parser.add_argument("--runs", type=int, default=3000, help="runs in the workload")
    parser.add_argument("--rounds", type=int, default=3, help="round pairs")
    args = parser.parse_args(argv)
    workload = generate(args.runs, seed=16)
    encoded = list(workload.encoded)
    keys = [e.run_id.encode() for e in workload.events]
    print(f"{len(encoded):,} events of {args.runs:,} runs, batches of {BATCH}")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="loop-collector-") as tmp:
        for r in range(args.rounds):
            pair = {}
            for loop in (False, True) if r % 2 == 0 else (True, False):
                name = "loop" if loop else "automatic"
                pair[name] = _round(encoded, keys, loop=loop, data=Path(tmp) / f"{r}-{name}")
                print(
                    f"round {r + 1} {name:9}: "
                    + ", ".join(
                        f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in pair[name].items()
                    )
                )
            ratios.append(pair["loop"]["events_per_s"] / pair["automatic"]["events_per_s"])
    print(
        f"events/s loop / automatic: median {statistics.median(ratios):.3f}"
        f" ({min(ratios):.3f}-{max(ratios):.3f}) over {len(ratios)} round pairs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
