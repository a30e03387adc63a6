"""Run one runtime worker in this process until SIGTERM or SIGINT, and say how it ended.

Exit codes: 0 after a clean stop; 75 when fenced (another instance owns this worker's work:
restart it) or when the consumer failed fatally (restart it); 1 when at-least-once outputs
could not be delivered (restart it; records are redelivered); 2 for bad settings or a query
port that cannot be bound.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from types import FrameType

from runstate.errors import ConfigError, QueryError
from runstate.runtime.app import build_worker, ensure_runtime_topics
from runstate.runtime.checkpoint import CheckpointFailed, Fenced
from runstate.runtime.collector import quiet_collector
from runstate.runtime.config import RuntimeConfig

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_FENCED", "quiet_collector", "run_worker"]

EXIT_FENCED = 75
EXIT_CONFIG = 2
EXIT_FAILED = 1


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
    # While the loop works through a backlog it holds the GIL; a thread that wants it (the
    # query API answering /health) asks it to let go after this interval, once per handoff,
    # and an answer takes several handoffs. The worker's own process only, like the above.
    sys.setswitchinterval(config.switch_interval_ms / 1000)

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
