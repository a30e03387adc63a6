"""One setting of the runtime worker on against off: rounds alternating in one run on one
broker, the same preloaded workload each round, per round the steady events/s and the CPU
milliseconds per event (:func:`benchmarks.live.throughput`), then the medians of each
setting and their ratios (on / off). Only ratios mean anything: the machine is shared.
Used by :mod:`benchmarks.journal_cost` and :mod:`benchmarks.health_cost`.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks import harness as h
from benchmarks.live import throughput
from benchmarks.workload import generate

__all__ = ["on_off_rounds"]


def on_off_rounds(
    name: str,
    env: Callable[[bool], dict[str, str]],
    n_runs: int,
    rounds: int,
    *,
    on_first: bool = True,
) -> dict[str, Any]:
    """``rounds`` pairs of rounds of a worker whose environment ``env(on)`` gives, on then
    off, alternating which goes first (``on_first=False`` mirrors the order, so a disturbance
    at a fixed time into the run, e.g. the broker's, falls on the other setting)."""
    workload = generate(n_runs)
    base = h.workdir()
    out: list[dict[str, Any]] = []
    try:
        with h.bench_broker(base) as bootstrap:
            for round_no in range(rounds * 2):
                on = ((round_no % 2 == 0) == (round_no // 2 % 2 == 0)) == on_first
                prefix = h.new_prefix(f"{name}-{'on' if on else 'off'}", round_no)
                names = h.create_topics(bootstrap, prefix)
                h.preload(bootstrap, prefix, workload.events)
                watch = h.OutputWatch(bootstrap, names.state_changes)
                worker = h.WorkerProcess(
                    h.RUNTIME_EOS, bootstrap, prefix, base / prefix, extra_env=env(on)
                )
                try:
                    figure = throughput(worker, watch, len(workload.events))
                finally:
                    worker.stop()
                    watch.close()
                    shutil.rmtree(base / prefix, ignore_errors=True)
                out.append({"round": round_no, name: on, **figure})
                print(
                    f"round {round_no} {name}={on}:"
                    f" {figure['steady_events_per_s']:.0f} events/s,"
                    f" {figure['cpu_ms_per_event']:.3f} CPU ms/event",
                    flush=True,
                )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def median(key: str, on: bool) -> float:
        return float(statistics.median(r[key] for r in out if r[name] is on))

    rate_on, rate_off = median("steady_events_per_s", True), median("steady_events_per_s", False)
    cpu_on, cpu_off = median("cpu_ms_per_event", True), median("cpu_ms_per_event", False)
    return {
        "events": len(workload.events),
        "runs": n_runs,
        "rounds": out,
        "median_events_per_s": {"on": rate_on, "off": rate_off},
        "median_cpu_ms_per_event": {"on": cpu_on, "off": cpu_off},
        "throughput_ratio": rate_on / rate_off,
        "cpu_per_event_ratio": cpu_on / cpu_off,
    }
