from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from runstate.errors import CompatibilityError, InvalidSchema
from runstate.schemas.catalog import SchemaCatalog, load_schema_text
from runstate.schemas.compat import (
    CompatibilityMode,
    check_catalog,
    check_pair,
    check_versions,
)
from tests.schemas.conftest import WriteSchema, record

COLOR = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}


def field(name: str, avro_type: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def fastavro_reads(writer: Any, reader: Any, datum: Any) -> Any:
    """Second opinion: actually write with ``writer`` and read with ``reader``."""
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(writer), datum)
    buffer.seek(0)
    return schemaless_reader(buffer, parse_schema(writer), parse_schema(reader))


COMPATIBLE = {
    "added optional field": (
        record("R", field("a", "string")),
        record("R", field("a", "string"), field("b", ["null", "string"], default=None)),
        {"a": "x"},
    ),
    "removed field": (
        record("R", field("a", "string"), field("b", "int")),
        record("R", field("a", "string")),
        {"a": "x", "b": 1},
    ),
    "int to long": (record("R", field("n", "int")), record("R", field("n", "long")), {"n": 7}),
    "long to double": (
        record("R", field("n", "long")),
        record("R", field("n", "double")),
        {"n": 7},
    ),
    "string to bytes": (
        record("R", field("s", "string")),
        record("R", field("s", "bytes")),
        {"s": "x"},
    ),
    "int into a union with long": (
        record("R", field("n", "int")),
        record("R", field("n", ["null", "long"])),
        {"n": 3},
    ),
    "enum symbol renamed with a default": (
        record("R", field("c", COLOR)),
        record("R", field("c", {**COLOR, "symbols": ["RED", "LIME"], "default": "RED"})),
        {"c": "GREEN"},
    ),
    "field renamed with an alias": (
        record("R", field("old", "string")),
        record("R", field("new", "string", aliases=["old"])),
        {"old": "x"},
    ),
    "record renamed with an alias": (
        record("R", field("a", "int")),
        {**record("S", field("a", "int")), "aliases": ["t.R"]},
        {"a": 1},
    ),
    "map and array values promoted": (
        record("R", field("m", {"type": "map", "values": {"type": "array", "items": "int"}})),
        record("R", field("m", {"type": "map", "values": {"type": "array", "items": "long"}})),
        {"m": {"k": [1, 2]}},
    ),
    "recursive record": (
        record("Node", field("next", ["null", "t.Node"], default=None)),
        record("Node", field("next", ["null", "Node"], default=None)),
        {"next": {"next": None}},
    ),
}


@pytest.mark.parametrize(("writer", "reader", "datum"), COMPATIBLE.values(), ids=list(COMPATIBLE))
def test_compatible_changes_pass_and_fastavro_agrees(writer: Any, reader: Any, datum: Any) -> None:
    assert check_pair(reader, writer) == []
    fastavro_reads(writer, reader, datum)


INCOMPATIBLE = {
    "reader adds field without default": (
        record("RunStarted", field("a", "string")),
        record("RunStarted", field("a", "string"), field("tenant", ["null", "string"])),
        "RunStarted.tenant: field missing in writer has no default in reader",
    ),
    "string to int": (
        record("R", field("a", "string")),
        record("R", field("a", "int")),
        "R.a: type changed from string (writer) to int (reader),"
        " which is not a permitted promotion",
    ),
    "long to int": (
        record("R", field("a", "long")),
        record("R", field("a", "int")),
        "R.a: type changed from long (writer) to int",
    ),
    "enum symbol renamed without default": (
        record("R", field("c", COLOR)),
        record("R", field("c", {**COLOR, "symbols": ["RED", "LIME"]})),
        "R.c: writer enum symbol(s) GREEN missing in reader enum Color,"
        " which has no default symbol",
    ),
    "enum renamed": (
        record("R", field("c", COLOR)),
        record("R", field("c", {**COLOR, "name": "Colour"})),
        "R.c: enum name t.Color (writer) matches neither the name nor an alias of t.Colour",
    ),
    "fixed size": (
        record("R", field("f", {"type": "fixed", "name": "F", "size": 4})),
        record("R", field("f", {"type": "fixed", "name": "F", "size": 8})),
        "R.f: fixed size changed from 4 (writer) to 8",
    ),
    "record renamed without alias": (
        record("R", field("a", "int")),
        record("S", field("a", "int")),
        "S: record name t.R (writer) matches neither",
    ),
    "optional became required": (
        record("R", field("a", ["null", "string"], default=None)),
        record("R", field("a", "string")),
        "R.a<null>: type changed from null (writer) to string (reader)",
    ),
    "no reader union branch fits": (
        record("R", field("a", "int")),
        record("R", field("a", ["null", "string"])),
        "R.a: writer type int matches no branch of reader union [null, string]",
    ),
    "nested array item narrowed": (
        record("R", field("m", {"type": "map", "values": {"type": "array", "items": "double"}})),
        record("R", field("m", {"type": "map", "values": {"type": "array", "items": "float"}})),
        "R.m{}[]: type changed from double (writer) to float",
    ),
}


@pytest.mark.parametrize(
    ("writer", "reader", "message"), INCOMPATIBLE.values(), ids=list(INCOMPATIBLE)
)
def test_incompatible_changes_are_named_by_field_and_rule(
    writer: Any, reader: Any, message: str
) -> None:
    found = [str(problem) for problem in check_pair(reader, writer)]
    assert len(found) == 1, found
    assert found[0].startswith(message), found


def test_fastavro_also_fails_on_data_for_a_rejected_change() -> None:
    writer, reader, _ = INCOMPATIBLE["reader adds field without default"]
    with pytest.raises(Exception):  # noqa: B017 - any fastavro failure is a second opinion
        fastavro_reads(writer, reader, {"a": "x"})


def test_every_problem_is_reported_not_only_the_first() -> None:
    writer = record("R", field("a", "string"), field("b", "string"))
    reader = record("R", field("a", "int"), field("b", "int"), field("c", "int"))
    assert [p.path for p in check_pair(reader, writer)] == ["R.a", "R.b", "R.c"]


def test_undeclared_type_is_invalid_schema() -> None:
    with pytest.raises(InvalidSchema, match="unknown type 'Nope'"):
        check_pair(record("R", field("a", "Nope")), record("R"))


def _versions(*schemas: dict[str, Any]) -> list[Any]:
    import json

    return [load_schema_text(json.dumps(s), version=i + 1) for i, s in enumerate(schemas)]


def test_backward_transitive_checks_every_earlier_version_not_only_the_last() -> None:
    versions = _versions(
        record("R", field("a", "string")),
        record("R"),
        record("R", field("a", "int", default=0)),
    )
    pairs, problems = check_versions(versions, CompatibilityMode.BACKWARD_TRANSITIVE)
    assert pairs == 3
    assert [str(p) for p in problems] == [
        "t.R v3 reading v1 [BACKWARD_TRANSITIVE]: R.a: type changed from string (writer) to int"
        " (reader), which is not a permitted promotion"
    ]


def test_full_transitive_also_checks_old_readers_of_new_data() -> None:
    versions = _versions(record("R", field("a", "string")), record("R"))
    assert check_versions(versions, CompatibilityMode.BACKWARD_TRANSITIVE)[1] == []
    pairs, problems = check_versions(versions, CompatibilityMode.FULL_TRANSITIVE)
    assert pairs == 2
    assert [p.subject for p in problems] == ["t.R v1 reading v2"]


def test_shipped_catalog_is_compatible(catalog: SchemaCatalog) -> None:
    report = check_catalog(catalog)
    assert report.ok, [str(p) for p in report.problems]
    report.raise_if_incompatible()
    assert report.pairs_checked >= 1


ENVELOPE = [
    field("event_id", "string"),
    field("run_id", "string"),
    field("occurred_at", {"type": "long", "logicalType": "timestamp-millis"}),
    field("producer", "string"),
]


def test_envelope_must_be_identical_in_every_event(write_schema: WriteSchema) -> None:
    write_schema("events/A.v1.avsc", record("A", *ENVELOPE, namespace="runstate.events"))
    plain_long = [*ENVELOPE[:2], field("occurred_at", "long"), ENVELOPE[3]]
    write_schema("events/B.v1.avsc", record("B", *plain_long, namespace="runstate.events"))
    root = write_schema("events/C.v1.avsc", record("C", *ENVELOPE[:3], namespace="runstate.events"))
    # Outside the events namespace nothing is required.
    write_schema("state/S.v1.avsc", record("S", namespace="runstate.state"))
    report = check_catalog(SchemaCatalog.from_directory(root))
    assert [str(p.incompatibility) for p in report.problems] == [
        "B.occurred_at: envelope field type long/None differs from long/timestamp-millis in"
        " runstate.events.A v1",
        "C.producer: envelope field missing; every event must carry it",
    ]
    with pytest.raises(CompatibilityError, match="2 schema incompatibilities"):
        report.raise_if_incompatible()
