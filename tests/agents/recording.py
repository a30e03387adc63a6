"""A run reader for SDK tests that notes the position each read asked to see."""

from __future__ import annotations

from typing import Any

from runstate.agents import InMemoryRuns
from runstate.streams.producer import Delivery


class PositionRecordingReader:
    """The in-memory reader, noting the position each read asked to see (``afters``)."""

    def __init__(self, runs: InMemoryRuns) -> None:
        self.runs = runs
        self.afters: list[Any] = []

    def read(self, run_id: str, *, after: Any = None) -> Any:
        self.afters.append(after)
        return self.runs.read(run_id, after=after)

    def latest_position(self, run_id: str) -> Delivery | None:
        return self.runs.latest_position(run_id)
