"""RunState as JSON for the query API, and the filters ``GET /runs`` accepts."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstate.processors.reducer import is_overdue
from runstate.processors.state import RunState, RunStatus

__all__ = ["RunFilter", "run_to_json"]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run_to_json(state: RunState) -> dict[str, Any]:
    """Every field of ``state`` with datetimes as ISO-8601 and enums as their values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [{g.name: getattr(v, g.name) for g in dataclasses.fields(v)} for v in value]
        out[f.name] = _plain(value)
    out["is_terminal"] = state.is_terminal
    return out


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What ``GET /runs`` selects; every given criterion must hold."""

    status: RunStatus | None = None
    owner: str | None = None
    approver: str | None = None
    overdue: bool = False

    def matches(self, state: RunState, now: datetime) -> bool:
        if self.status is not None and state.status is not self.status:
            return False
        if self.owner is not None and state.owner != self.owner:
            return False
        if self.approver is not None and (
            state.approval is None or state.approval.approver != self.approver
        ):
            return False
        return not self.overdue or is_overdue(state, now)

    def as_query(self) -> dict[str, str]:
        """The same filter as URL query parameters (for fanning out to other workers)."""
        q: dict[str, str] = {}
        if self.status is not None:
            q["status"] = self.status.value
        if self.owner is not None:
            q["owner"] = self.owner
        if self.approver is not None:
            q["approver"] = self.approver
        if self.overdue:
            q["overdue"] = "true"
        return q
