"""``python -m runstate.runtime``: run one worker until SIGTERM (or Ctrl-C).

Configured by ``RUNSTATE_*`` and ``RUNSTATE_RUNTIME_*`` variables. Exit codes: 0 after a
clean stop, 75 when fenced (another instance owns this worker's work: restart it), 1 when
at-least-once outputs could not be delivered (restart it; records are redelivered), 2 for
bad settings.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from runstate.errors import ConfigError, QueryError
from runstate.runtime.app import build_worker, ensure_runtime_topics
from runstate.runtime.checkpoint import CheckpointFailed, Fenced
from runstate.runtime.config import load_runtime_config

EXIT_FENCED = 75
EXIT_CONFIG = 2
EXIT_FAILED = 1


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_runtime_config()
        ensure_runtime_topics(config)
        worker = build_worker(config)
    except ConfigError as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_CONFIG

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


if __name__ == "__main__":
    sys.exit(main())
