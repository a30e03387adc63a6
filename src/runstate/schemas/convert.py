"""Pydantic events to Avro records and back.

The pydantic models in :mod:`runstate.schemas.events` correspond to the newest version of
each event's contract; older versions reach them through Avro schema resolution in the codec,
never through special cases here.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic

from runstate.errors import DecodeError, ValidationError
from runstate.schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog
from runstate.schemas.codec import SingleObjectCodec, default_codec, encode
from runstate.schemas.compat import EVENTS_NAMESPACE
from runstate.schemas.events import AgentEvent, event_type_of

__all__ = ["decode_event", "encode_event", "event_to_record", "record_to_event"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_to_record(
    event: AgentEvent, *, catalog: SchemaCatalog | None = None
) -> tuple[SchemaVersion, dict[str, Any]]:
    """The newest schema version of ``event``'s type and the event as an Avro record.

    Enums become their string values; timestamps stay aware UTC datetimes, which the
    ``timestamp-millis`` logical type writes as epoch milliseconds.

    Raises:
        ValidationError: the catalog has no schema for this event type.
    """
    if catalog is None:
        catalog = default_catalog()
    try:
        schema = catalog.latest(f"{EVENTS_NAMESPACE}.{event.event_type}")
    except KeyError as exc:
        raise ValidationError(
            f"no contract for event type {event.event_type!r}: add "
            f"avsc/events/{event.event_type}.v1.avsc"
        ) from exc
    record = {name: _to_avro(getattr(event, name)) for name in type(event).model_fields}
    return schema, record


def _to_avro(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return dict(value)
    return value


@functools.cache
def _timestamp_fields(event_class: type[AgentEvent]) -> frozenset[str]:
    return frozenset(
        name for name, info in event_class.model_fields.items() if info.annotation is datetime
    )


def record_to_event(
    name: str,
    record: Mapping[str, Any],
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> AgentEvent:
    """The pydantic event for an Avro record of record name ``name`` (short or full).

    Timestamps may be datetimes (as fastavro returns them) or epoch milliseconds; both
    become aware UTC datetimes. ``topic``, ``partition`` and ``offset`` only feed messages.

    Raises:
        DecodeError: ``name`` is not a known event type, or the values break the model's rules.
    """
    where: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    try:
        event_class = event_type_of(name)
    except KeyError as exc:
        raise DecodeError(
            f"{name!r} is not an event type this version of runstate knows; upgrade runstate",
            **where,
        ) from exc
    values = dict(record)
    for field in _timestamp_fields(event_class):
        raw = values.get(field)
        if isinstance(raw, int) and not isinstance(raw, bool):
            values[field] = _EPOCH + timedelta(milliseconds=raw)
    try:
        return event_class.model_validate(values)
    except pydantic.ValidationError as exc:
        raise DecodeError(
            f"{name} record breaks the event model's rules ({exc.error_count()} errors: {exc})",
            **where,
        ) from exc


def encode_event(event: AgentEvent, *, codec: SingleObjectCodec | None = None) -> bytes:
    """``event`` in Avro single-object encoding, with its type's newest schema version.

    Raises:
        ValidationError: the event does not fit its contract (or has none).
    """
    catalog = codec.catalog if codec is not None else None
    schema, record = event_to_record(event, catalog=catalog)
    return encode(record, schema)


def decode_event(
    data: bytes,
    *,
    codec: SingleObjectCodec | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> AgentEvent:
    """The event in ``data``, whatever version of its contract it was written with.

    Args:
        data: Single-object encoded bytes.
        codec: Use this codec (e.g. one with the schemas topic as writer source); by default
            the shipped catalog without a writer source.
        topic: Where the bytes came from; only for error messages.
        partition: As ``topic``.
        offset: As ``topic``.

    Raises:
        DecodeError: the bytes are not a readable event.
        UnknownSchema: the writer schema cannot be found.
    """
    decoded = (codec if codec is not None else default_codec()).decode(
        data, topic=topic, partition=partition, offset=offset
    )
    return record_to_event(
        decoded.name, decoded.record, topic=topic, partition=partition, offset=offset
    )
