"""Restate anchor (see benchmarks.steps_anchors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def measure(base: Path, samples: int, timed: Any) -> dict[str, Any]:
    from benchmarks.steps_anchors import Unavailable

    raise Unavailable("not wired yet")
