"""What the health process's status board costs the processor: one worker's throughput and
CPU per event with the health process (``RUNSTATE_RUNTIME_HEALTH_PORT`` set: the loop writes
its heartbeat each iteration and the status every 50 ms) against without
(``0``), rounds alternating in one run on one broker, the same preloaded workload each round.
Then, in this process, the board's own calls timed: one heartbeat, one status published.

``python -m benchmarks.health_cost [--runs N] [--rounds R]`` prints JSON and writes
``benchmarks/results/<stamp>-health-cost.json``: per round the steady events/s and the CPU
milliseconds per event (:func:`benchmarks.live.throughput`), the medians of each setting and
their ratios (with / without). Only ratios mean anything: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks import harness as h
from benchmarks.on_off import on_off_rounds
from runstate.runtime.health_board import StatusBoard
from runstate.streams.broker import free_port

__all__ = ["board_calls", "health_rounds"]


def health_rounds(n_runs: int, rounds: int, *, on_first: bool = True) -> dict[str, Any]:
    """``rounds`` pairs of rounds (health process on, then off, alternating which first;
    ``on_first=False`` mirrors the order)."""
    return on_off_rounds(
        "health_process",
        lambda on: {"RUNSTATE_RUNTIME_HEALTH_PORT": str(free_port() if on else 0)},
        n_runs,
        rounds,
        on_first=on_first,
    )


def board_calls(beats: int = 1_000_000, publishes: int = 20_000) -> dict[str, float]:
    """Microseconds per heartbeat (once per loop iteration) and per status published (every
    50 ms), a status of 6 partitions as the worker's."""
    board = StatusBoard()
    status = {
        "worker_id": "worker-1",
        "ready": True,
        "broker_error": None,
        "starting": False,
        "assigning": False,
        "active_partitions": [0, 1, 2],
        "restoring_partitions": [],
        "standby_partitions": [3, 4, 5],
        "last_checkpoint_at": datetime.now(UTC).isoformat(),
    }
    try:
        started = time.perf_counter()
        for i in range(beats):
            board.beat(float(i))
        beat_us = (time.perf_counter() - started) / beats * 1e6
        started = time.perf_counter()
        for _ in range(publishes):
            board.publish(status)
        publish_us = (time.perf_counter() - started) / publishes * 1e6
    finally:
        board.close()
    return {
        "heartbeat_us": round(beat_us, 3),
        "publish_us": round(publish_us, 2),
        # the share of one core the status takes: one publication per 50 ms
        "publisher_core_share": round(publish_us / 50_000, 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs in the workload")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each setting")
    parser.add_argument(
        "--off-first", action="store_true", help="the first round without the health process"
    )
    args = parser.parse_args()
    started = time.time()
    result: dict[str, Any] = {"board_calls": board_calls()}
    result |= health_rounds(args.runs, args.rounds, on_first=not args.off_first)
    result["first_round_health_process"] = not args.off_first
    result["took_s"] = time.time() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = h.ROOT / "benchmarks" / "results" / f"{stamp}-health-cost.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
