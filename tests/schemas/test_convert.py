from __future__ import annotations

import enum
import types
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from runstate.errors import DecodeError, ValidationError
from runstate.schemas.catalog import SchemaCatalog, SchemaVersion
from runstate.schemas.codec import SingleObjectCodec, encode
from runstate.schemas.convert import (
    decode_event,
    encode_event,
    event_to_record,
    record_to_event,
)
from runstate.schemas.events import (
    EVENT_TYPES,
    AgentEvent,
    FailureReason,
    RunClaimed,
    RunFailed,
    RunStarted,
    StepStarted,
)
from tests.schemas.strategies import events

WHEN = datetime(2024, 5, 1, 12, 30, 15, 123000, tzinfo=UTC)
ENVELOPE = {"event_id": "e1", "run_id": "r1", "occurred_at": WHEN, "producer": "p"}


@pytest.mark.parametrize("event_class", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
@settings(max_examples=60)
@given(data=st.data())
def test_every_event_type_round_trips(event_class: type[AgentEvent], data: st.DataObject) -> None:
    event = data.draw(events(event_class))
    encoded = encode_event(event)
    decoded = decode_event(encoded)
    assert decoded == event
    assert type(decoded) is event_class
    assert decoded.occurred_at.tzinfo is UTC


def _expected_avro_type(annotation: Any, event_class: type[AgentEvent], name: str) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        assert args[-1] is type(None), f"{event_class.__name__}.{name}: use T | None"
        return ["null", *(_expected_avro_type(a, event_class, name) for a in args[:-1])]
    if get_origin(annotation) is dict:
        return {"type": "map", "values": "string"}
    if get_origin(annotation) is tuple:
        return {"type": "array", "items": "string"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ("enum", annotation.__name__, [m.value for m in annotation])
    simple = {str: "string", int: "long", bool: "boolean"}
    if annotation in simple:
        return simple[annotation]
    if annotation is datetime:
        return {"type": "long", "logicalType": "timestamp-millis"}
    raise AssertionError(f"{event_class.__name__}.{name}: no Avro mapping for {annotation!r}")


def _actual_avro_type(avro_type: Any) -> Any:
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        return ("enum", avro_type["name"], avro_type["symbols"])
    return avro_type


def _python_default(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, tuple):
        return list(value)
    return value.value if isinstance(value, enum.Enum) else value


@pytest.mark.parametrize("event_class", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_model_and_newest_contract_agree(
    event_class: type[AgentEvent], catalog: SchemaCatalog
) -> None:
    schema = catalog.latest(event_class.event_type)
    assert schema.name == f"runstate.events.{event_class.__name__}"
    avro_fields = {f["name"]: f for f in schema.definition["fields"]}
    assert list(avro_fields) == list(event_class.model_fields)
    for name, info in event_class.model_fields.items():
        avro = avro_fields[name]
        expected = _expected_avro_type(info.annotation, event_class, name)
        assert _actual_avro_type(avro["type"]) == expected, name
        assert info.is_required() == ("default" not in avro), name
        if not info.is_required():
            assert avro["default"] == _python_default(info), name


def test_enums_carry_a_default_symbol(catalog: SchemaCatalog) -> None:
    for sv in (sv for sv in catalog if sv.name.startswith("runstate.events.")):
        for field in sv.definition["fields"]:
            if isinstance(field["type"], dict) and field["type"]["type"] == "enum":
                assert field["type"]["default"] in field["type"]["symbols"], sv.source


def test_event_to_record_uses_the_newest_version_and_plain_values(
    catalog: SchemaCatalog,
) -> None:
    event = RunFailed(**ENVELOPE, reason=FailureReason.TIMEOUT)
    schema, record = event_to_record(event)
    assert isinstance(schema, SchemaVersion)
    assert schema is catalog.latest("RunFailed")
    assert record["reason"] == "timeout"
    assert type(record["reason"]) is str
    assert record["occurred_at"] == WHEN


def test_record_to_event_accepts_epoch_millis_and_short_or_full_names() -> None:
    millis = int(WHEN.timestamp() * 1000)
    record = {**ENVELOPE, "occurred_at": millis, "reason": "timeout", "step": None}
    for name in ("RunFailed", "runstate.events.RunFailed"):
        event = record_to_event(name, record)
        assert event == RunFailed(**ENVELOPE, reason=FailureReason.TIMEOUT)


def test_record_to_event_refuses_unknown_types_and_bad_values() -> None:
    with pytest.raises(DecodeError, match="not an event type"):
        record_to_event("Nope", {}, topic="events", partition=0, offset=1)
    with pytest.raises(DecodeError, match="RunFailed record breaks") as caught:
        record_to_event("RunFailed", {**ENVELOPE, "reason": "no_such_reason"}, offset=5)
    assert caught.value.offset == 5


def test_old_records_decode_into_the_current_model(catalog: SchemaCatalog) -> None:
    v1 = catalog.get("RunStarted", 1)
    fields = {"agent": "a", "input": "{}", "prompt_version": "1", "owner": "o", "source": "s"}
    data = encode({**ENVELOPE, **fields}, v1)
    event = decode_event(data, codec=SingleObjectCodec(catalog))
    assert event == RunStarted(**ENVELOPE, **fields)
    assert isinstance(event, RunStarted) and event.tenant is None


def test_events_that_do_not_fit_the_contract_are_validation_errors() -> None:
    too_big = StepStarted(**ENVELOPE, step="s", step_index=0, attempt=2**63)
    with pytest.raises(ValidationError, match="StepStarted"):
        encode_event(too_big)
    event = RunFailed(**ENVELOPE, reason=FailureReason.OTHER)
    with pytest.raises(ValidationError, match="no contract"):
        encode_event(event, codec=SingleObjectCodec(SchemaCatalog([])))


def test_events_written_before_the_lease_read_with_no_epoch(catalog: SchemaCatalog) -> None:
    record = {**ENVELOPE, "step": "s", "step_index": 0, "attempt": 1, "input_ref": None}
    old = decode_event(encode(record, catalog.get("StepStarted", 1)))
    assert isinstance(old, StepStarted)
    assert old.epoch is None
    new = decode_event(encode({**record, "epoch": 4}, catalog.latest("StepStarted")))
    assert new.epoch == 4


def test_a_claim_needs_its_epoch() -> None:
    with pytest.raises(ValueError, match="needs the epoch"):
        RunClaimed(**ENVELOPE, claimed_by="worker-a", lease_ms=30_000)  # type: ignore[arg-type]
    claim = RunClaimed(**ENVELOPE, epoch=2, claimed_by="worker-a", lease_ms=30_000)  # type: ignore[arg-type]
    assert claim.claimed_epoch == 2
