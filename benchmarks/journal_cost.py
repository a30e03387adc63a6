"""What the per-run event journal costs the processor: one worker's throughput with the
journal against without (``RUNSTATE_RUNTIME_JOURNAL``), rounds alternating in one run on one
broker, the same preloaded workload each round.

``python -m benchmarks.journal_cost [--runs N] [--rounds R]`` prints JSON and writes
``benchmarks/results/<stamp>-journal-cost.json``: per round the steady events/s and the CPU
milliseconds per event (:func:`benchmarks.live.throughput`), then the medians of each
setting and their ratios (with / without). Only ratios mean anything: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks import harness as h
from benchmarks.live import throughput
from benchmarks.workload import generate

__all__ = ["journal_rounds"]


def journal_rounds(n_runs: int, rounds: int) -> dict[str, Any]:
    """``rounds`` pairs of rounds (journal on, then off, alternating which goes first)."""
    workload = generate(n_runs)
    base = h.workdir()
    out: list[dict[str, Any]] = []
    try:
        with h.bench_broker(base) as bootstrap:
            for round_no in range(rounds * 2):
                journal = (round_no % 2 == 0) == (round_no // 2 % 2 == 0)
                prefix = h.new_prefix(f"journal-{'on' if journal else 'off'}", round_no)
                names = h.create_topics(bootstrap, prefix)
                h.preload(bootstrap, prefix, workload.events)
                watch = h.OutputWatch(bootstrap, names.state_changes)
                worker = h.WorkerProcess(
                    h.RUNTIME_EOS,
                    bootstrap,
                    prefix,
                    base / prefix,
                    extra_env={"RUNSTATE_RUNTIME_JOURNAL": str(journal).lower()},
                )
                try:
                    figure = throughput(worker, watch, len(workload.events))
                finally:
                    worker.stop()
                    watch.close()
                    shutil.rmtree(base / prefix, ignore_errors=True)
                out.append({"round": round_no, "journal": journal, **figure})
                print(
                    f"round {round_no} journal={journal}:"
                    f" {figure['steady_events_per_s']:.0f} events/s,"
                    f" {figure['cpu_ms_per_event']:.3f} CPU ms/event",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def median(key: str, journal: bool) -> float:
        return statistics.median(r[key] for r in out if r["journal"] is journal)

    rate_on, rate_off = median("steady_events_per_s", True), median("steady_events_per_s", False)
    cpu_on, cpu_off = median("cpu_ms_per_event", True), median("cpu_ms_per_event", False)
    return {
        "events": len(workload.events),
        "runs": n_runs,
        "rounds": out,
        "median_events_per_s": {"journal": rate_on, "no_journal": rate_off},
        "median_cpu_ms_per_event": {"journal": cpu_on, "no_journal": cpu_off},
        "throughput_ratio": rate_on / rate_off,
        "cpu_per_event_ratio": cpu_on / cpu_off,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs in the workload")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each setting")
    args = parser.parse_args()
    started = time.time()
    result = journal_rounds(args.runs, args.rounds)
    result["took_s"] = time.time() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = h.ROOT / "benchmarks" / "results" / f"{stamp}-journal-cost.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
