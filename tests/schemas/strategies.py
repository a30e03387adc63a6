"""Hypothesis strategies for every agent event, derived from the pydantic models.

Derived rather than written per class so a field added to a model is exercised by the
round-trip tests without anyone remembering to extend them.
"""

from __future__ import annotations

import enum
import types
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Union, get_args, get_origin

import annotated_types
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from runstate.schemas.events import AgentEvent

_LONG_MAX = 2**63 - 1
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def _text(info: FieldInfo) -> st.SearchStrategy[str]:
    min_size, max_size = 0, 40
    for meta in info.metadata:
        if isinstance(meta, annotated_types.MinLen):
            min_size = meta.min_length
        if isinstance(meta, annotated_types.MaxLen):
            max_size = min(max_size, meta.max_length)
    return st.text(min_size=min_size, max_size=max_size)


def _integers(info: FieldInfo) -> st.SearchStrategy[int]:
    low = -(2**63)
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low = int(meta.ge)  # type: ignore[call-overload]
        if isinstance(meta, annotated_types.Gt):
            low = int(meta.gt) + 1  # type: ignore[call-overload]
    return st.integers(min_value=low, max_value=_LONG_MAX)


def _for(annotation: Any, info: FieldInfo) -> st.SearchStrategy[Any]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return st.one_of([_for(arg, info) for arg in get_args(annotation)])
    if annotation is type(None):
        return st.none()
    if annotation is str:
        return _text(info)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return _integers(info)
    if annotation is datetime:
        return st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    if origin is dict:
        return st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)
    if origin is tuple:
        return st.lists(st.text(max_size=10), max_size=3).map(tuple)
    raise NotImplementedError(f"no strategy for {annotation!r}; extend tests/schemas/strategies.py")


#: Fields optional in the envelope that a type's own validator requires (a claim's epoch).
_NEEDED_BY_A_VALIDATOR = {"RunClaimed": frozenset({"epoch"})}


def events(event_class: type[AgentEvent]) -> st.SearchStrategy[AgentEvent]:
    """Valid instances of ``event_class``, optional fields sometimes left at their default."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    needed = _NEEDED_BY_A_VALIDATOR.get(event_class.event_type, frozenset())
    for name, info in event_class.model_fields.items():
        if name in needed:
            [inner] = [a for a in get_args(info.annotation) if a is not type(None)]
            fields[name] = _for(inner, info)
            continue
        strategy = _for(info.annotation, info)
        fields[name] = strategy if info.is_required() else st.one_of(st.just(_MISSING), strategy)

    @st.composite
    def build(draw: st.DrawFn) -> AgentEvent:
        values = {name: draw(s) for name, s in fields.items()}
        if event_class.event_type == "ExternalActionResolved":
            # A found action names its external id, one not found none (the validator).
            found_id = draw(st.text(min_size=1, max_size=20))
            values["external_id"] = found_id if values["found"] else _MISSING
        return event_class(**{k: v for k, v in values.items() if v is not _MISSING})

    return build()


_MISSING = object()
