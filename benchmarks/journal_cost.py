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
import time
from datetime import UTC, datetime
from typing import Any

from benchmarks import harness as h
from benchmarks.on_off import on_off_rounds

__all__ = ["journal_rounds"]


def journal_rounds(n_runs: int, rounds: int) -> dict[str, Any]:
    """``rounds`` pairs of rounds (journal on, then off, alternating which goes first)."""
    return on_off_rounds(
        "journal", lambda on: {"RUNSTATE_RUNTIME_JOURNAL": str(on).lower()}, n_runs, rounds
    )


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
