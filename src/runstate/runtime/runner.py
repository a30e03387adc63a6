"""Run one runtime worker in this process until SIGTERM or SIGINT, and say how it ended.

Exit codes: 0 after a clean stop; 75 when fenced (another instance owns this worker's work:
restart it) or when the consumer failed fatally (restart it); 1 when at-least-once outputs
could not be delivered (restart it; records are redelivered); 2 for bad settings or a query
port that cannot be bound.
"""

from __future__ import annotations

import faulthandler
import gc
import signal
import sys
from types import FrameType

from runstate.errors import ConfigError, QueryError
from runstate.runtime.app import build_worker, ensure_runtime_topics
from runstate.runtime.checkpoint import CheckpointFailed, Fenced
from runstate.runtime.config import RuntimeConfig

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_FENCED", "quiet_collector", "run_worker"]

EXIT_FENCED = 75
EXIT_CONFIG = 2
EXIT_FAILED = 1

#: Young-generation threshold: CPython's 700 runs a collection every few hundred records.
GC_YOUNG_THRESHOLD = 20_000
#: Young collections between older ones (CPython: 10, 10).
GC_OLDER_THRESHOLDS = (20, 50)


def run_worker(config: RuntimeConfig) -> int:
    """Create the topics if missing, run the worker, return the exit code."""
    try:
        ensure_runtime_topics(config)
        worker = build_worker(config)
    except ConfigError as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    quiet_collector()
    # `kill -USR1 <pid>` prints every thread's stack to stderr: where a worker waits
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    except QueryError as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Fenced as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_FENCED
    except CheckpointFailed as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def quiet_collector() -> None:
    """Keep the cyclic garbage collector from holding the GIL for long.

    A full collection walks every tracked object and holds the GIL throughout, so the
    query API's thread (``/health`` among it) waits for it. Measured under load at 200,000
    runs: a full collection every few seconds (the decoded-state cache churns, so objects
    keep reaching the oldest generation), 50-70 ms of CPU each, stretched to 300-550 ms of
    wall time when the machine is short of CPU and the loop's thread is descheduled while
    holding the GIL. Everything alive after start-up (modules, schemas, the clients) is
    moved out of the collector's sight (``gc.freeze``), and collections run less often: the
    per-record garbage is acyclic and freed by reference counting, so a rarer young
    collection finds the same cycles, and fewer objects survive into the old generations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)
