"""The CLI run as a user runs it: a child process on this checkout's source."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["SRC", "runstate_cli"]

SRC = Path(__file__).resolve().parents[1] / "src"


def runstate_cli(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    unset: Iterable[str] = (),
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``runstate ARGS`` in ``cwd``, with this process's environment less ``unset`` plus
    ``env``; output captured as text, the exit code not checked."""
    dropped = set(unset)
    full = {k: v for k, v in os.environ.items() if k not in dropped}
    full.update(PYTHONPATH=str(SRC), **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", "from runstate.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=timeout_s,
        check=False,
    )
