"""RunState as JSON for the query API (both ways), and the filters ``GET /runs`` accepts.

There is one JSON form of a run state: :func:`run_to_json` writes it from the dataclass
fields and :func:`state_from_json` reads it back by the same fields' types, so a field added to
:class:`~runstate.runs.state.RunState` is in both without another hand-kept mapping. A run's
summary (:class:`~runstate.runs.summary.RunSummary`, the latest-state topic's record) has
the same form by the same rule (:func:`summary_to_json`), so a summary's JSON is the run's
JSON without the collections, with their counts.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from runstate.durations import format_duration, parse_duration
from runstate.errors import QueryError
from runstate.runs.reducer import is_overdue
from runstate.runs.state import RunState, RunStatus, StepPhase
from runstate.runs.summary import RunSummary

__all__ = [
    "RunFilter",
    "parse_idle_for",
    "parse_phase",
    "parse_status",
    "run_to_json",
    "state_from_json",
    "summary_to_json",
]

_D = TypeVar("_D")


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


def _fields_to_json(obj: RunState | RunSummary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {g.name: getattr(value, g.name) for g in dataclasses.fields(value)}
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [{g.name: getattr(v, g.name) for g in dataclasses.fields(v)} for v in value]
        out[f.name] = _plain(value)
    out["is_terminal"] = obj.is_terminal
    return out


def run_to_json(state: RunState) -> dict[str, Any]:
    """Every field of ``state`` with datetimes as ISO-8601 and enums as their values."""
    return _fields_to_json(state)


def summary_to_json(summary: RunSummary) -> dict[str, Any]:
    """Every field of ``summary``, in the same form as :func:`run_to_json`."""
    return _fields_to_json(summary)


def state_from_json(body: Mapping[str, Any]) -> RunState:
    """The :class:`RunState` in a query API answer (the inverse of :func:`run_to_json`).

    Keys the state does not have (``served_by``, ``partition``, ``is_terminal``) are ignored,
    so a newer worker adding fields does not break an older SDK.

    Raises:
        QueryError: the answer is not a run state.
    """
    try:
        return _dataclass_from_json(RunState, body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise QueryError(
            f"the query API answered something that is not a run state ({exc}); is the worker"
            " the same runstate version as this client?"
        ) from exc


@functools.cache
def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_from_json(cls: type[_D], body: Mapping[str, Any]) -> _D:
    hints = _field_types(cls)  # type: ignore[arg-type]
    values = {
        f.name: _from_json(hints[f.name], body[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in body
    }
    return cls(**values)


def _from_json(tp: Any, value: Any) -> Any:
    """``value`` (as :func:`_plain` wrote it) read back as type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        [inner] = [a for a in typing.get_args(tp) if a is not type(None)]
        return _from_json(inner, value)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_from_json(item, v) for v in value)
    if tp is datetime:
        return datetime.fromisoformat(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if dataclasses.is_dataclass(tp):
        return _dataclass_from_json(tp, value)  # type: ignore[arg-type]
    return value


def parse_status(text: RunStatus | str) -> RunStatus:
    """The :class:`RunStatus` spelled ``text``.

    Raises:
        ValueError: not a status; the message lists the valid ones.
    """
    try:
        return RunStatus(text)
    except ValueError:
        choices = ", ".join(s.value for s in RunStatus)
        raise ValueError(f"unknown status {text!r}; one of {choices}") from None


def parse_phase(text: StepPhase | str) -> StepPhase:
    """The :class:`StepPhase` spelled ``text``.

    Raises:
        ValueError: not a step phase; the message lists the valid ones.
    """
    try:
        return StepPhase(text)
    except ValueError:
        choices = ", ".join(p.value for p in StepPhase)
        raise ValueError(f"unknown phase {text!r}; one of {choices}") from None


def parse_idle_for(text: str | timedelta) -> timedelta:
    """How long a run must have been unchanged, from ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``.

    Bare numbers are refused, as in retention policies: ``2`` could mean seconds or hours.
    A :class:`~datetime.timedelta` is taken as it is, if it is positive.

    Raises:
        ValueError: not such a duration; the message shows the accepted form.
    """
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"idle_for: {exc}") from None


_TRUE = frozenset({"1", "true", "yes"})


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What ``GET /runs`` selects; every given criterion must hold.

    ``idle_for`` compares with :attr:`RunState.updated_at`, the latest ``occurred_at`` (the
    producer's clock) of any event applied to the run, model calls included: a run is idle
    for ``2h`` when nothing happened to it in the last two hours.
    """

    status: RunStatus | None = None
    owner: str | None = None
    approver: str | None = None
    overdue: bool = False
    step: str | None = None
    phase: StepPhase | None = None
    idle_for: timedelta | None = None
    #: Runs only a person can move on (failed: retry a step, settle an action, or close it).
    needs_attention: bool = False
    #: Failed runs with an external action whose outcome is unknown.
    unknown_actions: bool = False

    @classmethod
    def of(
        cls,
        *,
        status: RunStatus | str | None = None,
        owner: str | None = None,
        approver: str | None = None,
        overdue: bool = False,
        step: str | None = None,
        phase: StepPhase | str | None = None,
        idle_for: timedelta | str | None = None,
        needs_attention: bool = False,
        unknown_actions: bool = False,
    ) -> RunFilter:
        """The filter of these values, given as enum members or their spellings, ``idle_for``
        as a ``timedelta`` or ``"2h"``; ``None`` or ``""`` mean "any".

        Raises:
            ValueError: an unknown status or phase, or an ``idle_for`` that is not a positive
                duration; the message says what is accepted.
        """
        return cls(
            status=parse_status(status) if status else None,
            owner=owner or None,
            approver=approver or None,
            overdue=overdue,
            step=step or None,
            phase=parse_phase(phase) if phase else None,
            idle_for=None if idle_for is None or idle_for == "" else parse_idle_for(idle_for),
            needs_attention=needs_attention,
            unknown_actions=unknown_actions,
        )

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> RunFilter:
        """The filter named by URL query parameters (unknown parameters are ignored).

        Raises:
            ValueError: as :meth:`of`.
        """
        return cls.of(
            status=query.get("status"),
            owner=query.get("owner"),
            approver=query.get("approver"),
            overdue=query.get("overdue", "").lower() in _TRUE,
            step=query.get("step"),
            phase=query.get("phase"),
            idle_for=query.get("idle_for"),
            needs_attention=query.get("needs_attention", "").lower() in _TRUE,
            unknown_actions=query.get("unknown_actions", "").lower() in _TRUE,
        )

    def matches(self, state: RunState, now: datetime) -> bool:
        if self.status is not None and state.status is not self.status:
            return False
        if self.owner is not None and state.owner != self.owner:
            return False
        if self.approver is not None and (
            state.approval is None or state.approval.approver != self.approver
        ):
            return False
        if self.step is not None and state.current_step != self.step:
            return False
        if self.phase is not None and state.step_phase is not self.phase:
            return False
        if self.idle_for is not None and state.updated_at > now - self.idle_for:
            return False
        if self.needs_attention and not state.needs_person:
            return False
        if self.unknown_actions and not state.has_unknown_actions:
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
        if self.step is not None:
            q["step"] = self.step
        if self.phase is not None:
            q["phase"] = self.phase.value
        if self.idle_for is not None:
            q["idle_for"] = format_duration(self.idle_for)
        if self.needs_attention:
            q["needs_attention"] = "true"
        if self.unknown_actions:
            q["unknown_actions"] = "true"
        return q
