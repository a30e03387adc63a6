"""``python -m runstate.runtime``: run one worker until SIGTERM (or Ctrl-C).

Configured by ``RUNSTATE_*`` and ``RUNSTATE_RUNTIME_*`` variables; see
:func:`runstate.runtime.runner.run_worker` for the exit codes.
"""

from __future__ import annotations

import logging
import sys

from runstate.errors import ConfigError
from runstate.runtime.config import load_runtime_config
from runstate.runtime.runner import EXIT_CONFIG, run_worker


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_runtime_config()
    except ConfigError as exc:
        print(f"runstate runtime: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run_worker(config)


if __name__ == "__main__":
    sys.exit(main())
